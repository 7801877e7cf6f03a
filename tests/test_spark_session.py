"""get_spark's settings by precedence: mixweave's defaults, then the Spark install's spark-defaults.conf,
then the run config's ``spark.conf``, then what spark-submit launched the JVM with (its ``--conf`` wins, as
its ``--master`` does); JVM options are joined, later flags winning. The real paths are
tests/test_e2e.py's: the cluster scenario (``--conf spark.sql.shuffle.partitions=3`` over mixweave's 8)
and the resumed local run (a spark-defaults.conf in ``SPARK_CONF_DIR`` with 5)."""

from __future__ import annotations

from mixweave.jobs.spark import launched_conf, read_spark_defaults, run_conf, session_settings, site_defaults

DEFAULTS = {"spark.sql.shuffle.partitions": "8", "spark.ui.enabled": "false",
            "spark.python.daemon.module": "mixweave.jobs.pyspark_daemon",
            "spark.driver.extraJavaOptions": "-Dlog4j2.configurationFile=q",
            "spark.executor.extraJavaOptions": "-Dlog4j2.configurationFile=q -XX:+UseSerialGC"}


def test_the_run_config_overrides_defaults_and_appends_jvm_options():
    settings, replaced = session_settings(DEFAULTS, {"spark.sql.shuffle.partitions": "16", "spark.executor.cores": 4,
                                                     "spark.executor.extraJavaOptions": "-Xss4m"}, {})
    assert settings["spark.sql.shuffle.partitions"] == "16" and settings["spark.executor.cores"] == "4"
    assert settings["spark.executor.extraJavaOptions"] == "-Dlog4j2.configurationFile=q -XX:+UseSerialGC -Xss4m"
    assert settings["spark.python.daemon.module"] == "mixweave.jobs.pyspark_daemon" and replaced == []


def test_what_spark_submit_launched_the_jvm_with_wins():
    launched = {"spark.sql.shuffle.partitions": "3", "spark.python.daemon.module": "pyspark.daemon",
                "spark.ui.enabled": "false", "spark.executor.extraJavaOptions": "-XX:TieredStopAtLevel=1",
                "spark.master": "spark://h:7077", "spark.app.name": "submit.py"}
    settings, replaced = session_settings(DEFAULTS, {"spark.sql.shuffle.partitions": "16"}, launched)
    # not set again, so the launch's values stand (a cluster without mixweave on its executors keeps pyspark.daemon)
    assert "spark.sql.shuffle.partitions" not in settings and "spark.python.daemon.module" not in settings
    assert "spark.ui.enabled" not in settings  # the same value: nothing to set, nothing reported
    assert settings["spark.executor.extraJavaOptions"] == ("-Dlog4j2.configurationFile=q -XX:+UseSerialGC "
                                                           "-XX:TieredStopAtLevel=1")  # quiet log4j kept, theirs last
    assert "spark.master" not in settings and "spark.app.name" not in settings  # never ours to set
    assert replaced == ["spark.executor.extraJavaOptions", "spark.python.daemon.module", "spark.sql.shuffle.partitions"]
    again, _ = session_settings(DEFAULTS, None, {"spark.executor.extraJavaOptions": "-XX:+UseSerialGC"})
    assert again["spark.executor.extraJavaOptions"] == DEFAULTS["spark.executor.extraJavaOptions"]  # already there


def test_nothing_is_launched_outside_spark_submit(monkeypatch):
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    assert launched_conf() == {}


def test_spark_defaults_conf_is_read_as_spark_reads_it(tmp_path, monkeypatch):
    text = ("# comment\n! also a comment\n\nspark.sql.shuffle.partitions   5\nspark.executor.memory=4g\n"
            "spark.driver.extraJavaOptions: -Dx=1 -Dy=2  \nother.key 3\n=no key\n")
    assert read_spark_defaults(text) == {"spark.sql.shuffle.partitions": "5", "spark.executor.memory": "4g",
                                         "spark.driver.extraJavaOptions": "-Dx=1 -Dy=2"}
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))
    assert site_defaults() == ({}, None)  # no file: nothing
    (tmp_path / "spark-defaults.conf").write_text(text)
    assert site_defaults() == (read_spark_defaults(text), tmp_path / "spark-defaults.conf")


def test_the_site_file_overrides_defaults_and_yields_to_the_run_config():
    site = {"spark.sql.shuffle.partitions": "5", "spark.ui.enabled": "true", "spark.executor.memory": "4g",
            "spark.executor.extraJavaOptions": "-Xss2m"}
    settings, _ = session_settings(DEFAULTS, {"spark.ui.enabled": "false", "spark.executor.extraJavaOptions": "-Xss4m"},
                                   {}, site=site)
    assert settings["spark.sql.shuffle.partitions"] == "5" and settings["spark.executor.memory"] == "4g"
    assert settings["spark.ui.enabled"] == "false"  # the run config's word is last
    assert settings["spark.executor.extraJavaOptions"] == ("-Dlog4j2.configurationFile=q -XX:+UseSerialGC "
                                                           "-Xss2m -Xss4m")


def test_driver_memory_is_the_sites_unless_the_run_config_sets_it():
    from mixweave.jobs.config import SparkConfig

    defaults = {**DEFAULTS, "spark.driver.memory": "2g"}
    site = {"spark.driver.memory": "16g"}
    assert SparkConfig().driver_memory is None
    unset, _ = session_settings(defaults, run_conf(SparkConfig().driver_memory, {}), {}, site=site)
    assert unset["spark.driver.memory"] == "16g"
    assert session_settings(defaults, run_conf(None, {}), {})[0]["spark.driver.memory"] == "2g"
    assert session_settings(defaults, run_conf("4g", {}), {}, site=site)[0]["spark.driver.memory"] == "4g"
    assert run_conf("4g", {"spark.driver.memory": "8g", "spark.executor.cores": 2}) == {
        "spark.driver.memory": "8g", "spark.executor.cores": "2"}
