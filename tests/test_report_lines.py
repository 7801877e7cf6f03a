"""The report's lines for learned mixtures (DoReMi / RegMix) and similarity batching."""

from __future__ import annotations

from mixweave.pipeline.report import coherence_section, learned_line


def test_learned_line_names_runs_flops_and_pre_cap_weights():
    mixture = {"learned": {"method": "regmix", "proxies": [{}, {}, {}], "flops": 2.4e10,
                           "model": {"depth": 1, "params": 3_300_000}, "weights": {"web": 0.2, "code": 0.8}}}
    line = learned_line(mixture)
    assert "regmix: 3 proxy runs of depth 1" in line and "2.4e+10 FLOPs" in line
    assert line.index("code 0.800") < line.index("web 0.200")  # largest first
    assert learned_line({"method": {"name": "unimax"}}) is None


def test_coherence_section_lists_every_order_of_the_exports_that_measured_it():
    c = {"global_batch": 8, "similarity": {"window_pairs": 0.73, "doc_pairs": 0.25},
         "shuffle": {"window_pairs": 0.1, "doc_pairs": 0.09}, "source_shuffle": {"window_pairs": 0.2, "doc_pairs": None}}
    html = coherence_section({"exports": {"hf": {"batch_coherence": c}, "megatron": {"files": []}}})
    assert html.count("<tr>") == 4  # header + three orders, hf only
    for value in ("0.73", "0.1", "0.2", "similarity", "source_shuffle"):
        assert value in html
    assert coherence_section({"exports": {"megatron": {"files": []}}}) is None
    assert coherence_section({"exports": {"hf": {"batch_coherence": {"global_batch": 8, "note": "no embed"}}}}) is None
