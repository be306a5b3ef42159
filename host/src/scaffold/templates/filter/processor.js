// {{name}}: keeps the records whose JSON field `field` holds one of the
// `keep` values, and emits them unchanged (start from here).
//
// Config (JSON, all optional): {"field": "level", "keep": ["ERROR"]}. A
// record that is not a JSON object is refused with a ProcessError naming
// it: bad data, set aside by the host's failure policy.
import { ProcessError, Processor } from 'kinesis-processor';

const SETTINGS = ['field', 'keep'];

export class App extends Processor {
  static get processorName() { return '{{name}}'; }

  constructor(config, shard) {
    super(config, shard);
    const unknown = Object.keys(config).filter((k) => !SETTINGS.includes(k));
    if (unknown.length) throw new Error(`invalid config: unknown setting(s) ${unknown.join(', ')}`);
    this.field = config.field ?? 'level';
    this.keep = config.keep ?? ['ERROR'];
    if (typeof this.field !== 'string' || !this.field) throw new Error('invalid config: `field` must be a non-empty string');
    if (!Array.isArray(this.keep)) throw new Error('invalid config: `keep` must be a list of values');
  }

  process(batch, out) {
    let index = 0;
    for (const record of batch) {
      let fields = null;
      try {
        fields = JSON.parse(record.text);
      } catch {
        // not JSON: refused below
      }
      if (fields === null || typeof fields !== 'object' || Array.isArray(fields)) {
        // The records before it are done; this one is bad data.
        throw ProcessError.at(index, 'the data is not a JSON object');
      }
      if (Object.hasOwn(fields, this.field) && this.keep.includes(fields[this.field])) {
        out.emit(record.partitionKey, record.data);
      }
      index += 1;
    }
  }
}
