// The shape of the codebase, checked in `npm test` (scripts/test): each process folder stands
// alone on common/, and nothing imports in a circle.
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    { name: 'no-circular', severity: 'error', from: {}, to: { circular: true } },
    {
      name: 'processes-stand-alone',
      comment: 'api/, consumer/ and dispatcher/ are separate processes: they share code through common/ only',
      severity: 'error',
      from: { path: '^(api|consumer|dispatcher)/' },
      to: { path: '^(api|consumer|dispatcher)/', pathNot: '^$1/' },
    },
    {
      name: 'common-imports-no-process',
      severity: 'error',
      from: { path: '^common/' },
      to: { path: '^(api|consumer|dispatcher|scripts|bench)/' },
    },
    {
      name: 'tools-use-common',
      comment:
        'scripts/ and bench/ use common/ only. Kept: bench/pipeline.ts and bench/workers.ts drive the ' +
        "consumer's runner, pool, gateway and verifier in process, which is what they measure.",
      severity: 'error',
      from: { path: '^(scripts|bench)/', pathNot: '^bench/(pipeline|workers)\\.ts$' },
      to: { path: '^(api|consumer|dispatcher)/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
  },
};
