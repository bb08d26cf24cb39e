// The V8 flags the API process runs with, wherever it is started (the supervisor, the benches;
// the API image's NODE_OPTIONS says the same, and test/unit/runtime.test.ts keeps them equal).
// A 4 MiB semi-space: an upload's buffers die young, and a small young generation collects them
// (and the memory they hold outside the heap) sooner. bench:api, 32 clients: peak RSS 260-269
// MiB against 320-327, GC threads 2.8-3.5 ms a request against 4.6-4.9 (bench/NOTES.md).
export const API_NODE_FLAGS = ['--max-semi-space-size=4'];
