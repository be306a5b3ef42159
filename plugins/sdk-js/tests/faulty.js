// Fails on purpose, for the host's tests of what an author sees:
// `{"fail_in": "init"}` throws in the constructor; otherwise a record whose
// data is `crash` hits a TypeError (a bug: retried, then bisected), and one
// whose data is `bad` is refused with ProcessError.at (a poison record, by
// the author's decision), `object-data` emits an object (SDK misuse), and
// `network` fetches (there is no network in the sandbox).
// Other records are echoed.
import { ProcessError, Processor, log } from 'kinesis-processor';
import { exports } from 'kinesis-processor/component';

class Faulty extends Processor {
  static get processorName() { return 'js-faulty'; }

  constructor(config, shard) {
    super(config, shard);
    if (config.fail_in === 'init') throw new RangeError('window_seconds must be positive');
    console.log(`faulty starts on ${shard.shardId}`);
  }

  process(batch, out) {
    let i = 0;
    for (const record of batch) {
      if (record.text === 'crash') {
        const lookup = {};
        lookup[record.partitionKey].count += 1;
      }
      if (record.text === 'bad') throw ProcessError.at(i, `record ${i} is bad`);
      if (record.text === 'object-data') out.emit(record.partitionKey, { n: i });
      if (record.text === 'network') fetch('http://example.com/');
      out.emit(record.partitionKey, record.data);
      i++;
    }
    log('info', `processed ${batch.length} records`);
  }
}

export const { processor, merge } = exports(Faulty);
