/**
 * Imported first by bench/serve.ts, before anything can load the native addon (libgomp reads
 * these once, at load): OMP_WAIT_POLICY=active beside GOMP_SPINCOUNT=2000000, unless either is
 * set. The serving benchmark runs kernels in two threads at once — the engine alone in its main
 * thread and the server's engine in a worker — so the process has two OpenMP teams and more
 * threads than cores, and libgomp then replaces the spin count by a "throttled" 1,000 iterations
 * unless the policy is active: its engine-alone column ran at ~0.4×. Not the loader's default:
 * training ran at 0.78× with the active policy (native/README.md).
 */
if (process.env['OMP_WAIT_POLICY'] === undefined && process.env['GOMP_SPINCOUNT'] === undefined) {
  process.env['OMP_WAIT_POLICY'] = 'active';
  process.env['GOMP_SPINCOUNT'] = '2000000';
}
export {};
