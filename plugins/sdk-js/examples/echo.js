// Echo: emits `partition-key : data` per record, like seed 000's EchoWorker.
// Data is shown as UTF-8, or as base64 (prefixed `base64:`) when it is not.
// The same output as the Rust echo (plugins/echo).
import { Processor, base64 } from 'kinesis-processor';
import { exports } from 'kinesis-processor/component';

const strict = new TextDecoder('utf-8', { fatal: true });

class Echo extends Processor {
  static get processorName() { return 'echo'; }

  constructor(config, shard) {
    super(config, shard);
    const unknown = Object.keys(config).filter((k) => k !== 'separator');
    if (unknown.length) throw new Error(`invalid echo config: unknown setting(s) ${unknown.join(', ')}; the only one is \`separator\``);
    this.separator = config.separator ?? ' : ';
  }

  process(batch, out) {
    for (const record of batch) {
      const key = record.partitionKey;
      let text;
      try {
        text = strict.decode(record.data);
      } catch {
        text = `base64:${base64(record.data)}`;
      }
      out.emit(key, `${key}${this.separator}${text}`);
    }
  }
}

// componentize-js takes the exported interfaces from these names.
export const { processor, merge } = exports(Echo);
