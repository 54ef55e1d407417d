"""ExampleGen and the TFDV statistics job through Beam's portable job API (Dataflow Runner v2,
Flink and Spark submit this way): an embedded job server and a loopback SDK worker, so every
transform and DoFn crosses the runner API as a proto and is unpickled by the SDK harness."""

from __future__ import annotations

import json
import pathlib

from components import examples
from components.example_gen import IngestConfig, run_ingest
from components.statistics_gen import (
    EXAMPLES_OUTSIDE_DOMAIN,
    custom_statistic,
    feature_statistics,
    generate_statistics,
    load_statistics,
    statistics_schema,
)

PORTABLE = ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"]


def folder_bytes(folder: pathlib.Path, pattern: str) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.glob(pattern))}


def test_example_gen_writes_the_same_bytes_on_the_portable_runner(
    synthetic_images, synthetic_examples, tmp_path
):
    portable = run_ingest(
        str(synthetic_images), str(tmp_path / "portable"), IngestConfig(), PORTABLE
    )
    assert portable["beam_options"]["runner"] == "PortableRunner"
    for pattern in ("Split-*/*.gz", examples.VOCAB_FILE, examples.REJECTED_FILE):
        written = folder_bytes(tmp_path / "portable", pattern)
        assert written and written == folder_bytes(synthetic_examples, pattern), pattern
    direct = json.loads((synthetic_examples / examples.METADATA_FILE).read_text())
    portable = json.loads((tmp_path / "portable" / examples.METADATA_FILE).read_text())
    for metadata in (direct, portable):
        del metadata["beam_options"]
    assert portable == direct


def test_statistics_are_the_same_bytes_on_the_portable_runner(synthetic_examples, tmp_path):
    """With a schema, so the project's own statistics generator runs in the SDK worker too."""
    schema = statistics_schema()
    length = next(f for f in schema.feature if f.name == "label_length")
    length.int_domain.min, length.int_domain.max = 4, 5  # synthetic labels are 4-6 long
    paths = {
        name: generate_statistics(str(synthetic_examples), str(tmp_path / name), schema, args)
        for name, args in (("direct", []), ("portable", PORTABLE))
    }
    for split in examples.SPLITS:
        direct, portable = (pathlib.Path(paths[name][split]).read_bytes() for name in paths)
        assert direct == portable, split
        feature = feature_statistics(load_statistics(paths["portable"][split]), "label_length")
        assert custom_statistic(feature, EXAMPLES_OUTSIDE_DOMAIN) > 0
