"""mixweave/jobs/spark_cds.py: Spark's JVMs map the class-data archive only when it was built for this
java and these jars (another JDK's or other jars' archive would be refused with a warning)."""

from __future__ import annotations

import json
import subprocess

import pytest

from mixweave.jobs import spark_cds


@pytest.mark.spark  # fingerprints the java on PATH
def test_flags_only_for_a_built_archive_that_matches_this_java_and_these_jars(tmp_path, monkeypatch):
    archive = tmp_path / "spark.jsa"
    monkeypatch.setenv("MIXWEAVE_SPARK_CDS", str(archive))
    assert spark_cds.archive_path() == archive and spark_cds.archive_flags() == ""  # not built
    archive.write_bytes(b"archive")
    assert spark_cds.archive_flags() == ""  # no sidecar
    sidecar = tmp_path / "spark.jsa.json"
    recorded = spark_cds.fingerprint()
    assert recorded is not None and recorded["jars"] and recorded["java"][0].endswith("java")
    sidecar.write_text(json.dumps(recorded))
    assert spark_cds.archive_flags() == f"-XX:SharedArchiveFile={archive} -Xlog:cds=off -Xlog:cds+dynamic=off"
    other_jar = {**recorded, "jars": [[name, size + 1, mtime] for name, size, mtime in recorded["jars"]]}
    sidecar.write_text(json.dumps(other_jar))
    assert spark_cds.archive_flags() == ""  # the jars changed (a reinstalled pyspark)
    other_java = {**recorded, "java": ["/opt/jdk-21/bin/java", 1, 1]}
    sidecar.write_text(json.dumps(other_java))
    assert spark_cds.archive_flags() == ""
    sidecar.write_text("{not json")
    assert spark_cds.archive_flags() == ""
    monkeypatch.setenv("MIXWEAVE_SPARK_CDS", "off")
    assert spark_cds.archive_path() is None and spark_cds.archive_flags() == ""


@pytest.mark.spark
def test_the_session_jvm_maps_the_archive_make_install_built(spark):
    flags = spark_cds.archive_flags()
    if not flags:
        pytest.skip("no class-data archive for this java and these jars (make install builds it)")
    jvm = spark.sparkContext._jvm
    arguments = list(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    assert f"-XX:SharedArchiveFile={spark_cds.archive_path()}" in arguments
    # the archive maps for this JVM and the driver's class path: -Xshare:on makes a refusal an error
    class_path = jvm.java.lang.System.getProperty("java.class.path")
    java = spark_cds.fingerprint()["java"][0]
    done = subprocess.run([java, "-Xshare:on", f"-XX:SharedArchiveFile={spark_cds.archive_path()}", "-cp", class_path,
                           "-version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
