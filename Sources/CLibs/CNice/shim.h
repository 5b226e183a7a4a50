#include <nice/agent.h>
#include <glib.h>
