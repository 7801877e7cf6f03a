"""The one benchmark reader (mixweave.data.benchmarks): bad records skipped, counted and warned
about once; a file with nothing usable is an InputError naming it; utility and eval both use it."""

from __future__ import annotations

import json
import logging

import pytest

from mixweave.data.benchmarks import load_benchmarks, read_benchmark_records, select_split
from mixweave.errors import InputError

GOOD = [
    {"benchmark": "arc", "split": "dev", "id": "a1", "prompt": "Q: 2+2?", "answer": " 4"},
    {"benchmark": "arc", "split": "test", "id": "a2", "prompt": "Q: 3+3?", "answer": " 6"},
    {"benchmark": "mbpp", "split": "dev", "prompt": "def add(a, b):", "answer": None},
    {"benchmark": "gsm", "split": "dev", "id": 7, "prompt": "Q: 5*5?", "answer": 25},
]


def write_lines(path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def enc(rec) -> bytes:
    return json.dumps(rec).encode()


def test_reads_good_records_and_normalises_id_and_answer(tmp_path):
    path = tmp_path / "benchmarks.jsonl"
    write_lines(path, [enc(r) for r in GOOD])
    read = read_benchmark_records(path)
    assert read.skipped == {} and read.n_input == 4
    assert [r["benchmark"] for r in read.records] == ["arc", "arc", "mbpp", "gsm"]
    assert read.records[2]["answer"] == "" and read.records[2]["id"] == "2"  # position among non-blank lines
    assert read.records[3]["answer"] == "25" and read.records[3]["id"] == "7"


def test_bad_lines_are_skipped_counted_by_reason_and_warned_once(tmp_path, caplog):
    path = tmp_path / "benchmarks.jsonl"
    write_lines(path, [
        enc(GOOD[0]),
        b"{not json",                                              # line 2
        b"",                                                       # blank: not a record
        b"\xff\xfe not utf-8",                                     # line 4
        b"[1, 2]",                                                 # line 5
        enc({"prompt": "no name"}),                                # line 6
        enc({"benchmark": "", "prompt": "empty name"}),            # line 7
        enc({"benchmark": "arc", "prompt": 3}),                    # line 8
        enc({"benchmark": "arc", "prompt": "p", "answer": [1]}),   # line 9
        enc(GOOD[1]),
    ])
    with caplog.at_level(logging.WARNING, logger="mixweave.data.benchmarks"):
        read = read_benchmark_records(path)
    assert [r["id"] for r in read.records] == ["a1", "a2"]
    assert read.skipped == {"invalid_json": 1, "invalid_utf8": 1, "not_an_object": 1, "no_benchmark": 2,
                            "no_prompt": 1, "bad_answer": 1}
    assert read.n_input == 9  # kept + skipped; the blank line is not a record
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert "skipped 7 of 9" in msg and f"{path}:2 (invalid_json)" in msg and "2 no_benchmark" in msg


def test_a_file_without_a_usable_record_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "bad.jsonl"
    write_lines(path, [b"{oops", enc({"benchmark": "b", "prompt": 3})])
    with pytest.raises(InputError) as err:
        load_benchmarks(path)
    msg = str(err.value)
    assert f"{path}:1 (invalid_json)" in msg and "1 no_prompt" in msg and "'prompt'" in msg
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(InputError, match="empty.jsonl has no benchmark records"):
        load_benchmarks(empty)
    with pytest.raises(InputError, match="does not exist"):
        load_benchmarks(tmp_path / "missing.jsonl")


def test_split_selection(tmp_path):
    path = tmp_path / "benchmarks.jsonl"
    write_lines(path, [enc(r) for r in GOOD])
    assert [r["id"] for r in load_benchmarks(path, "test")] == ["a2"]
    assert len(load_benchmarks(path)) == 4
    with pytest.raises(InputError, match=r"split='train'.*\['dev', 'test'\]"):
        select_split(read_benchmark_records(path), "train")


def test_records_in_memory_follow_the_same_policy(caplog):
    with caplog.at_level(logging.WARNING, logger="mixweave.data.benchmarks"):
        read = read_benchmark_records([GOOD[0], None, {"benchmark": "x"}])
    assert len(read.records) == 1 and read.skipped == {"not_an_object": 1, "no_prompt": 1}
    assert "record 1 (not_an_object)" in caplog.text
    with pytest.raises(InputError, match="no usable benchmark record"):
        read_benchmark_records([None])


def test_utility_and_eval_read_the_same_records(tmp_path):
    """Both consumers go through the one reader: same records kept, same ones skipped."""
    from mixweave.utility.api import read_benchmarks

    path = tmp_path / "benchmarks.jsonl"
    write_lines(path, [enc(r) for r in GOOD] + [b"{bad", enc({"benchmark": "arc", "prompt": 1})])
    eval_records = load_benchmarks(path)
    grouped = read_benchmarks(path, split="auto")
    assert {r["id"] for r in eval_records} == {"a1", "a2", "2", "7"}
    assert grouped["arc"] == [r for r in eval_records if r["id"] == "a1"]  # auto: dev records only
    assert sorted(grouped) == ["arc", "gsm", "mbpp"]
