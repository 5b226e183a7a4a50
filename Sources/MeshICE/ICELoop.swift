import CNice
import Foundation

/// The one GLib main loop every libnice agent of the process runs on (docs/ice.md): a `GMainContext` and a
/// `GMainLoop` on a dedicated thread, started on first use and kept for the life of the process. libnice emits
/// its signals and delivers received data on this thread; agents are torn down here too, so a callback never
/// runs concurrently with the teardown of its agent.
final class ICELoop: @unchecked Sendable {
    static let shared = ICELoop()

    /// Immutable after `init`; GLib's context and loop are thread-safe to reference from any thread.
    let context: OpaquePointer
    private let loop: OpaquePointer

    private init() {
        context = g_main_context_new()
        loop = g_main_loop_new(context, 0)
        let started = DispatchSemaphore(value: 0)
        let thread = Thread { [self] in
            g_main_context_push_thread_default(context)
            started.signal()
            g_main_loop_run(loop)
        }
        thread.name = "meshnode-ice"
        thread.start()
        started.wait()
    }

    /// Runs `work` on the loop's thread, soon (it is queued: never inline, even when called from that thread).
    func perform(_ work: @escaping @Sendable () -> Void) {
        let box = Unmanaged.passRetained(WorkBox(work)).toOpaque()
        let source = g_idle_source_new()
        g_source_set_callback(source, { data in
            Unmanaged<WorkBox>.fromOpaque(data!).takeRetainedValue().work()
            return 0  // G_SOURCE_REMOVE
        }, box, nil)
        g_source_attach(source, context)
        g_source_unref(source)
    }

    private final class WorkBox: Sendable {
        let work: @Sendable () -> Void
        init(_ work: @escaping @Sendable () -> Void) { self.work = work }
    }
}
