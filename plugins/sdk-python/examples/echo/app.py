"""Echo: emits `partition-key : data` per record, like seed 000's EchoWorker.
Data is shown as UTF-8, or as base64 (prefixed `base64:`) when it is not.
The same output as the Rust echo (plugins/echo)."""

import base64

from kinesis_processor import Processor, exports


class Echo(Processor):
    name = "echo"

    def __init__(self, config, shard):
        super().__init__(config, shard)
        unknown = set(config) - {"separator"}
        if unknown:
            raise ValueError(f"invalid echo config: unknown setting(s) {sorted(unknown)}; the only one is `separator`")
        self.separator = config.get("separator", " : ")

    def process(self, batch, out):
        sep = self.separator
        for record in batch:
            key, data = record.partition_key, record.data
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = "base64:" + base64.b64encode(data).decode()
            out.emit(key, f"{key}{sep}{text}")


# componentize-py looks for these two names.
Processor, Merge = exports(Echo)
