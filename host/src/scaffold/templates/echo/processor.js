// {{name}}: emits `partition-key : data` for every record (start from here).
import { Processor } from 'kinesis-processor';

export class App extends Processor {
  static get processorName() { return '{{name}}'; }

  constructor(config, shard) {
    super(config, shard);
    this.separator = config.separator ?? ' : ';
  }

  process(batch, out) {
    for (const record of batch) {
      out.emit(record.partitionKey, `${record.partitionKey}${this.separator}${record.text}`);
    }
  }
}
