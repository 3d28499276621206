// A kernel trace of any CUDA program, for the speed work on the GPU forward: a CUPTI activity tracer that the CUDA
// driver loads into the program when CUDA_INJECTION64_PATH names it. It writes every kernel, copy, memset and
// synchronisation with its GPU timestamps to $TRACE_OUT (default trace.csv) as CSV lines:
//
//   t0,<timestamp at start>
//   k,<start ns>,<end ns>,<stream>,<blocks>,<threads per block>,<kernel name>
//   m,<start>,<end>,<stream>,<bytes>,<copy kind: 1 host to device, 2 device to host, 8 device to device>
//   s,<start>,<end>,<stream>,<bytes>                (memset)
//   y,<start>,<end>,<stream>,<synchronisation type>
//
// Build it with benches/e2e/kernel_trace.sh; summarise a trace with benches/e2e/kernel_report.py.
#include <cupti.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static FILE* out;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
#define BUF (8 << 20)

static void CUPTIAPI requested(uint8_t** buffer, size_t* size, size_t* max) {
  *buffer = (uint8_t*)aligned_alloc(8, BUF);
  *size = BUF;
  *max = 0;
}

static void CUPTIAPI completed(CUcontext ctx, uint32_t stream, uint8_t* buffer, size_t size, size_t valid) {
  CUpti_Activity* record = NULL;
  pthread_mutex_lock(&lock);
  while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
    switch (record->kind) {
      case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL:
      case CUPTI_ACTIVITY_KIND_KERNEL: {
        CUpti_ActivityKernel10* k = (CUpti_ActivityKernel10*)record;
        fprintf(out, "k,%llu,%llu,%u,%d,%d,%s\n", (unsigned long long)k->start, (unsigned long long)k->end,
                k->streamId, k->gridX * k->gridY * k->gridZ, k->blockX * k->blockY * k->blockZ, k->name);
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMCPY: {
        CUpti_ActivityMemcpy6* m = (CUpti_ActivityMemcpy6*)record;
        fprintf(out, "m,%llu,%llu,%u,%llu,%u\n", (unsigned long long)m->start, (unsigned long long)m->end, m->streamId,
                (unsigned long long)m->bytes, (unsigned)m->copyKind);
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMSET: {
        CUpti_ActivityMemset4* m = (CUpti_ActivityMemset4*)record;
        fprintf(out, "s,%llu,%llu,%u,%llu\n", (unsigned long long)m->start, (unsigned long long)m->end, m->streamId,
                (unsigned long long)m->bytes);
        break;
      }
      case CUPTI_ACTIVITY_KIND_SYNCHRONIZATION: {
        CUpti_ActivitySynchronization2* s = (CUpti_ActivitySynchronization2*)record;
        fprintf(out, "y,%llu,%llu,%u,%u\n", (unsigned long long)s->start, (unsigned long long)s->end, s->streamId,
                (unsigned)s->type);
        break;
      }
      default:
        break;
    }
  }
  pthread_mutex_unlock(&lock);
  free(buffer);
}

static void finish(void) {
  cuptiActivityFlushAll(1);
  pthread_mutex_lock(&lock);
  if (out) fflush(out);
  pthread_mutex_unlock(&lock);
}

int InitializeInjection(void) {
  const char* path = getenv("TRACE_OUT");
  out = fopen(path ? path : "trace.csv", "w");
  if (!out) return 0;
  uint64_t t = 0;
  cuptiGetTimestamp(&t);
  fprintf(out, "t0,%llu\n", (unsigned long long)t);
  cuptiActivityRegisterCallbacks(requested, completed);
  cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
  cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY);
  cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMSET);
  cuptiActivityEnable(CUPTI_ACTIVITY_KIND_SYNCHRONIZATION);
  atexit(finish);
  return 1;
}
