// The V8 flags the API process runs with, wherever it is started (the supervisor, the benches;
// the API image's NODE_OPTIONS says the same, and test/unit/runtime.test.ts keeps them equal).
// A 4 MiB semi-space: an upload's buffers die young, and a small young generation collects them
// (and the memory they hold outside the heap) sooner. bench:api, 32 clients: peak RSS 268-269
// MiB against 298-336, GC threads 3.1-3.3 ms a request against 4.6-4.9 (bench/NOTES.md).
export const API_NODE_FLAGS = ['--max-semi-space-size=4'];
