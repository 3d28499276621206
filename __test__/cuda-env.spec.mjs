// The CUDA build's recipe guards, run without a GPU or a CUDA toolkit: tools/cuda-env.sh refuses CUDA wheels that
// are not all of the pinned release (the mix a bare `pip install nvidia-cuda-nvcc==13.0.88` gives), naming each;
// tools/check-ptx.sh refuses PTX newer than the driver loads. Python's importlib.metadata reads the versions, so a
// folder of `*.dist-info` directories and an `nvidia/cu13/bin/nvcc` stands in for the installed wheels.
import { execFileSync, spawnSync } from 'node:child_process'
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import test from 'ava'
import { ROOT, tempDir } from './helpers/checkpoint.mjs'

const python = ['python3', 'python'].find((p) => spawnSync(p, ['-c', 'import importlib.metadata'], { stdio: 'ignore' }).status === 0)
const requirements = readFileSync(join(ROOT, 'tools', 'cuda-requirements.txt'), 'utf8')
  .split('\n')
  .map((line) => line.split('#')[0].trim())
  .filter(Boolean)
  .map((line) => line.split('=='))

/** A site folder holding the given wheel versions and a stub nvcc, as pip lays them out. */
function fakeWheels(versions) {
  const site = tempDir()
  for (const [name, version] of Object.entries(versions)) {
    const info = join(site, `${name.replaceAll('-', '_')}-${version}.dist-info`)
    mkdirSync(info)
    writeFileSync(join(info, 'METADATA'), `Metadata-Version: 2.1\nName: ${name}\nVersion: ${version}\n`)
  }
  const bin = join(site, 'nvidia', 'cu13', 'bin')
  mkdirSync(bin, { recursive: true })
  writeFileSync(join(bin, 'nvcc'), '#!/bin/sh\nexit 0\n')
  chmodSync(join(bin, 'nvcc'), 0o755)
  return site
}

/** Sources tools/cuda-env.sh with only `site`'s wheels visible (python -S: no site-packages of this machine), and
 * a toolkit folder marked as laid out, so that nothing is fetched. */
function sourceCudaEnv(site) {
  const wrapper = join(site, 'python')
  writeFileSync(wrapper, `#!/bin/sh\nexec ${python} -S "$@"\n`)
  chmodSync(wrapper, 0o755)
  const toolkit = tempDir()
  const marker = readFileSync(join(ROOT, 'tools', 'cuda-env.sh'), 'utf8').match(/marker=\$toolkit\/(\.complete-\$nvvm_version-\d+)/)[1]
  const nvvm = readFileSync(join(ROOT, 'tools', 'cuda-env.sh'), 'utf8').match(/nvvm_version=([\d.]+)/)[1]
  writeFileSync(join(toolkit, marker.replace('$nvvm_version', nvvm)), '')
  return spawnSync('bash', ['-c', '. tools/cuda-env.sh && echo "CUDA_ROOT=$CUDA_ROOT"'], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, PYTHONPATH: site, MOE_QUANT_CUDA_PYTHON: wrapper, MOE_QUANT_CUDA_TOOLKIT: toolkit },
  })
}

test('tools/cuda-requirements.txt pins every CUDA wheel of the build to one release', (t) => {
  const names = requirements.map(([name]) => name)
  for (const wheel of ['nvidia-cuda-nvcc', 'nvidia-cuda-runtime', 'nvidia-cuda-cccl', 'nvidia-nvvm', 'nvidia-cuda-crt', 'nvidia-cuda-nvrtc', 'nvidia-cublas', 'nvidia-curand']) {
    t.true(names.includes(wheel), wheel)
  }
  const toolkit = requirements.filter(([name]) => !['nvidia-cublas', 'nvidia-curand', 'nvidia-cuda-cccl'].includes(name))
  t.deepEqual([...new Set(toolkit.map(([, version]) => version))], ['13.0.88'])
})

test('cuda-env.sh refuses a mix of CUDA releases and names each wheel that differs', (t) => {
  if (!python) return t.pass('no python3 with importlib.metadata on this machine')
  // What `pip install nvidia-cuda-nvcc==13.0.88` alone resolves to: its unpinned dependencies at the newest release.
  const mixed = Object.fromEntries(requirements)
  Object.assign(mixed, { 'nvidia-cuda-runtime': '13.5.37', 'nvidia-nvvm': '13.5.37', 'nvidia-cuda-crt': '13.5.37' })
  delete mixed['nvidia-cublas']
  const result = sourceCudaEnv(fakeWheels(mixed))
  t.not(result.status, 0)
  t.regex(result.stderr, /nvidia-cuda-runtime 13\.5\.37 \(needs 13\.0\.88\)/)
  t.regex(result.stderr, /nvidia-nvvm 13\.5\.37 \(needs 13\.0\.88\)/)
  t.regex(result.stderr, /nvidia-cublas not installed/)
  t.regex(result.stderr, /pip install -r .*tools\/cuda-requirements\.txt/)
  t.notRegex(result.stderr, /nvidia-cuda-nvcc /)
})

test('cuda-env.sh passes the version check with every wheel at its pin', (t) => {
  if (!python) return t.pass('no python3 with importlib.metadata on this machine')
  const result = sourceCudaEnv(fakeWheels(Object.fromEntries(requirements)))
  t.is(result.status, 0, result.stderr)
  t.regex(result.stdout, /CUDA_ROOT=\S+/)
})

test('check-ptx.sh refuses PTX newer than the driver loads, before running ptxas', (t) => {
  const target = tempDir()
  const out = join(target, 'release', 'build', 'kernels-0', 'out')
  mkdirSync(out, { recursive: true })
  writeFileSync(join(out, 'quant.ptx'), '//\n.version 9.5\n.target sm_80\n.address_size 64\n')
  const bin = tempDir()
  writeFileSync(join(bin, 'ptxas'), '#!/bin/sh\nexit 0\n') // never reached for this module
  chmodSync(join(bin, 'ptxas'), 0o755)
  const env = { ...process.env, PATH: `${bin}:${process.env.PATH}` }
  const refused = spawnSync('bash', ['tools/check-ptx.sh', target], { cwd: ROOT, encoding: 'utf8', env })
  t.not(refused.status, 0)
  t.regex(refused.stderr, /quant\.ptx is PTX ISA 9\.5, newer than the 9\.0 the target driver loads/)
  const newer = execFileSync('bash', ['tools/check-ptx.sh', target], { cwd: ROOT, encoding: 'utf8', env: { ...env, MOE_QUANT_PTX_ISA_MAX: '9.5' } })
  t.regex(newer, /1 PTX modules load on a driver for PTX ISA 9\.5/)
})
