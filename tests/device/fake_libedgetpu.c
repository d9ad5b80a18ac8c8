/* A stand-in for libedgetpu.so.1 that fails the way a broken Edge TPU runtime does, for the
 * delegate probe tests: built with -DMODE_<X>, no libc needed (gcc -shared -nostdlib).
 *   CRASH     segfaults while creating the delegate (a libedgetpu built for another TFLite)
 *   HANG      never returns (a wedged USB accelerator)
 *   NODEVICE  returns no delegate (no Edge TPU plugged in: the runtime raises ValueError)
 *   PREPFAIL  a delegate whose Prepare fails (the runtime raises RuntimeError)
 *   OK        a delegate that claims no node: the model runs (on the CPU) */
typedef struct TfLiteDelegate {
  void* data_;
  int (*Prepare)(void* context, struct TfLiteDelegate* delegate);
  void* CopyFromBufferHandle;
  void* CopyToBufferHandle;
  void* FreeBufferHandle;
  long long flags;
  void* opaque_delegate_builder;
} TfLiteDelegate;

static int prepare_ok(void* c, TfLiteDelegate* d) { (void)c; (void)d; return 0; }
static int prepare_fail(void* c, TfLiteDelegate* d) { (void)c; (void)d; return 1; }
static TfLiteDelegate the_delegate;

void* tflite_plugin_create_delegate(char** keys, char** values, __SIZE_TYPE__ n, void (*report)(const char*)) {
  (void)keys; (void)values; (void)n;
#if defined(MODE_CRASH)
  *(volatile int*)0 = 42;
  return 0;
#elif defined(MODE_HANG)
  for (volatile int i = 0;; i++) {}
#elif defined(MODE_NODEVICE)
  if (report) report("fake libedgetpu: no Edge TPU device");
  return 0;
#else
  (void)report;
  the_delegate.Prepare =
#if defined(MODE_PREPFAIL)
      prepare_fail;
#else
      prepare_ok;
#endif
  return &the_delegate;
#endif
}

void tflite_plugin_destroy_delegate(void* d) { (void)d; }
