"""get_spark's settings by precedence: mixweave's defaults, then the run config's ``spark.conf``, then
what spark-submit launched the JVM with (its ``--conf`` wins, as its ``--master`` does); JVM options are
joined, later flags winning. The real spark-submit path is tests/test_e2e.py's cluster scenario
(``--conf spark.sql.shuffle.partitions=3`` over mixweave's 8)."""

from __future__ import annotations

from mixweave.jobs.spark import launched_conf, session_settings

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
