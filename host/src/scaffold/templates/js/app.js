// The component's entry: the processor, exported as componentize-js expects.
import { exports } from 'kinesis-processor/component';
import { App } from './processor.js';

export const { processor, merge } = exports(App);
