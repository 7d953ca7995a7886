"""TFDS builders (ArrayRecord) for the liveinterp record schema.

- `LiveinterpCorpus` (`liveinterp_corpus/<src>_<tgt>_<size>`): the synthetic corpus from
  `data_pipelines.corpus`, splits train/dev/test/talk.
- `LiveinterpCvss` (`liveinterp_cvss/<c|t>_<src>_en`): CVSS + Common Voice, from a
  manual_dir.
- `LiveinterpCovost2` (`liveinterp_covost2/<src>_<tgt>`): CoVoST 2 + Common Voice, from a
  manual_dir.

Importing this package registers the builders, so `tfds.data_source(name, data_dir=...)`
reads a prepared build.
"""

from data_pipelines.tfds_builders.common import (BuildStats, RecordError, SAMPLE_RATE,
                                                 decode_example, load_audio,
                                                 record_features, split_words,
                                                 validate_record)
from data_pipelines.tfds_builders.covost2 import LiveinterpCovost2
from data_pipelines.tfds_builders.cvss import LiveinterpCvss
from data_pipelines.tfds_builders.liveinterp_corpus import (LiveinterpCorpus, builder,
                                                            config_name, data_source)

__all__ = [
    "BuildStats", "RecordError", "SAMPLE_RATE", "decode_example", "load_audio",
    "record_features", "split_words", "validate_record", "LiveinterpCovost2",
    "LiveinterpCvss", "LiveinterpCorpus", "builder", "config_name", "data_source",
]
