#include <nice/agent.h>
#include <glib.h>

/* Typed wrappers for what Swift cannot call directly: g_signal_connect is a macro over a GCallback (a function
   pointer of no particular type), and g_object_set is variadic. One wrapper per signal MeshICE listens to, with
   the signal's exact C signature. */

typedef void (*cnice_candidate_cb)(NiceAgent *agent, NiceCandidate *candidate, gpointer data);
typedef void (*cnice_gathering_done_cb)(NiceAgent *agent, guint stream_id, gpointer data);
typedef void (*cnice_selected_pair_cb)(NiceAgent *agent, guint stream_id, guint component_id, NiceCandidate *local,
                                       NiceCandidate *remote, gpointer data);
typedef void (*cnice_state_cb)(NiceAgent *agent, guint stream_id, guint component_id, guint state, gpointer data);

static inline gulong cnice_on_new_candidate(NiceAgent *agent, cnice_candidate_cb cb, gpointer data) {
    return g_signal_connect_data(agent, "new-candidate-full", G_CALLBACK(cb), data, NULL, 0);
}

static inline gulong cnice_on_gathering_done(NiceAgent *agent, cnice_gathering_done_cb cb, gpointer data) {
    return g_signal_connect_data(agent, "candidate-gathering-done", G_CALLBACK(cb), data, NULL, 0);
}

static inline gulong cnice_on_selected_pair(NiceAgent *agent, cnice_selected_pair_cb cb, gpointer data) {
    return g_signal_connect_data(agent, "new-selected-pair-full", G_CALLBACK(cb), data, NULL, 0);
}

static inline gulong cnice_on_state_changed(NiceAgent *agent, cnice_state_cb cb, gpointer data) {
    return g_signal_connect_data(agent, "component-state-changed", G_CALLBACK(cb), data, NULL, 0);
}

static inline void cnice_disconnect_all(NiceAgent *agent, gpointer data) {
    g_signal_handlers_disconnect_matched(agent, G_SIGNAL_MATCH_DATA, 0, 0, NULL, NULL, data);
}

/* The agent's settings that are properties (not construct options): role, ICE-TCP and UPnP off, STUN timing. */
static inline void cnice_configure(NiceAgent *agent, gboolean controlling, guint max_retransmissions,
                                   guint idle_timeout_ms) {
    g_object_set(agent, "controlling-mode", controlling, "ice-tcp", FALSE, "ice-udp", TRUE, "upnp", FALSE,
                 "stun-max-retransmissions", max_retransmissions, "idle-timeout", idle_timeout_ms, NULL);
}

static inline void cnice_set_stun_server(NiceAgent *agent, const char *ip, guint port) {
    g_object_set(agent, "stun-server", ip, "stun-server-port", port, NULL);
}
