"""{{name}}: keeps the records whose JSON field `field` holds one of the
`keep` values, and emits them unchanged (start from here).

Config (JSON, all optional): {"field": "level", "keep": ["ERROR"]}. A record
that is not a JSON object is refused with a ProcessError naming it: bad
data, set aside by the host's failure policy.
"""

import json

from kinesis_processor import ProcessError, Processor, exports

SETTINGS = {"field", "keep"}


class App(Processor):
    name = "{{name}}"

    def __init__(self, config, shard):
        super().__init__(config, shard)
        unknown = sorted(set(config) - SETTINGS)
        if unknown:
            raise ValueError(f"invalid config: unknown setting(s) {', '.join(unknown)}")
        self.field = config.get("field", "level")
        self.keep = config.get("keep", ["ERROR"])
        if not isinstance(self.field, str) or not self.field:
            raise ValueError("invalid config: `field` must be a non-empty string")
        if not isinstance(self.keep, list):
            raise ValueError("invalid config: `keep` must be a list of values")

    def process(self, batch, out):
        for index, record in enumerate(batch):
            try:
                fields = json.loads(record.data)
            except ValueError:
                fields = None
            if not isinstance(fields, dict):
                # The records before it are done; this one is bad data.
                raise ProcessError.at(index, "the data is not a JSON object")
            if self.field in fields and fields[self.field] in self.keep:
                out.emit(record.partition_key, record.data)


# componentize-py looks for these two names.
Processor, Merge = exports(App)
