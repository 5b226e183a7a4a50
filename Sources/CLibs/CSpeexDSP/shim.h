#include <speex/speex_resampler.h>
#include <speex/speex_preprocess.h>

/* speex_preprocess_ctl takes a void* argument: typed wrappers for the settings the sender uses. */
static inline int mesh_speex_preprocess_set_int(SpeexPreprocessState *s, int request, int value) { return speex_preprocess_ctl(s, request, &value); }
