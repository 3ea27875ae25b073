import itertools

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from neuroprune_fairseq.core import (
    find_dominating,
    find_dominating_exact,
    plan_redundant_heads,
    resolve_representatives,
    similarity_matrix,
)


def S(rows):
    return torch.tensor(rows, dtype=torch.bool)


def paper_algorithm_3(sim):
    """Algorithm 3 transcribed with the paper's 1-based indices and vector arithmetic."""
    k = len(sim)
    Sm = [[0] + [int(x) for x in row] for row in sim]  # 1-based columns
    Sm = [None] + Sm
    D = {}
    for i in range(1, k + 1):
        js = i
        for j in range(1, k + 1):
            s = [Sm[js][c] - Sm[j][c] for c in range(1, k + 1)]
            if (1 not in s and -1 in s) or (all(x == 0 for x in s) and js < j):
                js = j
        D[i] = js
    return [D[i] - 1 for i in range(1, k + 1)]


def test_path_graph_keeps_the_centre():
    sim = S([[1, 1, 0], [1, 1, 1], [0, 1, 1]])
    assert find_dominating(sim) == [1, 1, 1]


def test_identical_heads_keep_the_last():
    sim = S([[1, 1, 1], [1, 1, 1], [1, 1, 1]])
    assert find_dominating(sim) == [2, 2, 2]


def test_no_similarity_keeps_all():
    assert find_dominating(S([[1, 0], [0, 1]])) == [0, 1]


def test_two_cliques():
    sim = S([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])
    assert find_dominating(sim) == [1, 1, 3, 3]


def test_star_keeps_its_centre():
    # head 1 is similar to every head; 2 ~ 3 too. N(0) = {0,1} and N(2) = N(3) = {1,2,3}
    # are strict subsets of N(1) = {0,1,2,3}, so all heads are represented by head 1.
    sim = S([[1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 1, 1], [0, 1, 1, 1]])
    rep = find_dominating(sim)
    assert rep == [1, 1, 1, 1] == paper_algorithm_3(sim.tolist())
    resolved = resolve_representatives(rep)
    assert all(resolved[r] == r for r in resolved)
    assert all(sim[i, resolved[i]] for i in range(4))


def test_resolve_follows_chains():
    assert resolve_representatives([1, 2, 2, 3]) == [2, 2, 2, 3]


def test_plan_from_weights_with_theta():
    torch.manual_seed(0)
    hd, d = 2, 5
    q, k, v = torch.randn(3 * hd, d), torch.randn(3 * hd, d), torch.randn(3 * hd, d)
    for w in (q, k, v):
        w[hd:2 * hd] = w[:hd] + 0.01  # head 1 = head 0 shifted by 0.01 everywhere
    plan = plan_redundant_heads(q, k, v, 3, theta=0.02)
    assert plan.keep == [1, 2] and plan.rep == [1, 1, 2]
    assert abs(plan.min_distance - 0.01) < 1e-6
    assert plan_redundant_heads(q, k, v, 3, theta=0.005).keep == [0, 1, 2]


@st.composite
def similarity_graphs(draw, max_k=9):
    k = draw(st.integers(1, max_k))
    bits = draw(st.lists(st.booleans(), min_size=k * k, max_size=k * k))
    m = torch.tensor(bits, dtype=torch.bool).reshape(k, k)
    m = m | m.T
    m.fill_diagonal_(True)
    return m


def _check_cover(sim, rep):
    k = sim.shape[0]
    kept = {i for i in range(k) if rep[i] == i}
    assert kept, "a module must keep at least one head"
    for i in range(k):
        assert rep[rep[i]] == rep[i], "merged into a removed head"
        assert sim[i, rep[i]], "head merged into a head it is not similar to"
        assert any(sim[i, j] for j in kept), "kept set does not dominate"
    return kept


def _brute_min_dominating(sim):
    k = sim.shape[0]
    for size in range(1, k + 1):
        for combo in itertools.combinations(range(k), size):
            if all(any(sim[i, j] for j in combo) for i in range(k)):
                return size


@settings(max_examples=150, deadline=None)
@given(similarity_graphs())
def test_heuristic_matches_paper_and_dominates(sim):
    rep = find_dominating(sim)
    assert rep == paper_algorithm_3(sim.int().tolist())
    _check_cover(sim, resolve_representatives(rep))


@settings(max_examples=150, deadline=None)
@given(similarity_graphs())
def test_exact_is_minimum_and_never_larger(sim):
    exact = _check_cover(sim, find_dominating_exact(sim))
    heuristic = _check_cover(sim, resolve_representatives(find_dominating(sim)))
    assert len(exact) <= len(heuristic)
    assert len(exact) == _brute_min_dominating(sim)


def test_similarity_matrix_diagonal_and_threshold():
    dist = torch.tensor([[0.0, 0.2, 0.5], [0.2, 0.0, 0.3], [0.5, 0.3, 0.0]], dtype=torch.float64)
    assert similarity_matrix(dist, 0.2).tolist() == [[True, True, False], [True, True, False], [False, False, True]]
