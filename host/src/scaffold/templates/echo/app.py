"""{{name}}: emits `partition-key : data` for every record (start from here)."""

from kinesis_processor import Processor, exports


class App(Processor):
    name = "{{name}}"

    def __init__(self, config, shard):
        super().__init__(config, shard)
        self.separator = config.get("separator", " : ")

    def process(self, batch, out):
        for record in batch:
            key = record.partition_key
            out.emit(key, f"{key}{self.separator}{record.data.decode('utf-8', 'replace')}")


# componentize-py looks for these two names.
Processor, Merge = exports(App)
