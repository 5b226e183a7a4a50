import CNice
import Foundation

/// One ICE session (RFC 8445) with libnice: one stream of one UDP component, trickled candidates, on the shared
/// GLib thread (`ICELoop`). The caller's side is controlling.
///
/// Threads: libnice's agent is thread-safe, so the methods call it directly from any thread, and never while
/// holding this object's lock (libnice's signals run on the ICE thread and take that lock). libnice's signals and
/// received data arrive on the ICE thread and go straight to `onEvent`. `close()` hands the teardown to the ICE
/// thread: signal handlers are disconnected there, so no callback can run after the agent's last reference goes.
/// While the agent is open, libnice holds a retained reference to this object (the callbacks' context),
/// released when `nice_agent_close_async` has finished: an agent nobody closes keeps its sockets (and any TURN
/// allocation) until the process ends, so every owner calls `close()`.
public final class ICEAgent: @unchecked Sendable {
    public let controlling: Bool
    public let settings: ICESettings
    private let onEvent: @Sendable (ICEEvent) -> Void
    /// Set in `init`, never changed; libnice's calls on it are thread-safe.
    private let agent: OpaquePointer
    private let stream: UInt32
    private static let component: UInt32 = 1

    private let lock = NSLock()
    /// Guarded by `lock`.
    private var closed = false
    private var selected: (local: CandidateInfo, remote: CandidateInfo)?
    private var state = ICEState.disconnected

    public enum SetupError: Error, Equatable {
        case noStream, badLocalAddress(String), relayRefused
    }

    /// Creates the agent and its stream (nothing is sent until `start`).
    public init(controlling: Bool, settings: ICESettings = ICESettings(),
                onEvent: @escaping @Sendable (ICEEvent) -> Void) throws(SetupError) {
        self.controlling = controlling
        self.settings = settings
        self.onEvent = onEvent
        var options = NICE_AGENT_OPTION_ICE_TRICKLE.rawValue
        if settings.nomination == .regular { options |= NICE_AGENT_OPTION_REGULAR_NOMINATION.rawValue }
        if settings.consentFreshness { options |= NICE_AGENT_OPTION_CONSENT_FRESHNESS.rawValue }
        agent = nice_agent_new_full(ICELoop.shared.context, NICE_COMPATIBILITY_RFC5245, NiceAgentOption(options))
        cnice_configure(agent, controlling ? 1 : 0, settings.stunMaxRetransmissions, settings.idleTimeoutMs)
        if let stun = settings.stunServer, settings.turn == nil {
            cnice_set_stun_server(agent, stun.host, UInt32(stun.port))
        }
        for address in settings.localAddresses {
            var nice = NiceAddress()
            nice_address_init(&nice)
            guard nice_address_set_from_string(&nice, address) != 0 else {
                g_object_unref(UnsafeMutableRawPointer(agent))
                throw .badLocalAddress(address)
            }
            nice_agent_add_local_address(agent, &nice)
        }
        stream = nice_agent_add_stream(agent, 1)
        guard stream != 0 else {
            g_object_unref(UnsafeMutableRawPointer(agent))
            throw .noStream
        }
        if let turn = settings.turn, nice_agent_set_relay_info(agent, stream, Self.component, turn.host, UInt32(turn.port),
                                                               turn.username, turn.password, NICE_RELAY_TYPE_TURN_UDP) == 0 {
            g_object_unref(UnsafeMutableRawPointer(agent))
            throw .relayRefused
        }
        let context = Unmanaged.passRetained(self).toOpaque()
        cnice_on_new_candidate(agent, { _, candidate, data in
            guard let candidate, let data else { return }
            Unmanaged<ICEAgent>.fromOpaque(data).takeUnretainedValue().localCandidate(candidate)
        }, context)
        cnice_on_gathering_done(agent, { _, _, data in
            guard let data else { return }
            Unmanaged<ICEAgent>.fromOpaque(data).takeUnretainedValue().emit(.gatheringDone)
        }, context)
        cnice_on_selected_pair(agent, { _, _, _, local, remote, data in
            guard let local, let remote, let data else { return }
            Unmanaged<ICEAgent>.fromOpaque(data).takeUnretainedValue().selectedPair(CandidateInfo(local), CandidateInfo(remote))
        }, context)
        cnice_on_state_changed(agent, { _, _, _, state, data in
            guard let data else { return }
            Unmanaged<ICEAgent>.fromOpaque(data).takeUnretainedValue().stateChanged(ICEState(state))
        }, context)
        nice_agent_attach_recv(agent, stream, Self.component, ICELoop.shared.context, { _, _, _, length, buffer, data in
            guard let buffer, let data else { return }
            let bytes = UnsafeRawBufferPointer(start: buffer, count: Int(length))
            Unmanaged<ICEAgent>.fromOpaque(data).takeUnretainedValue().emit(.received(Array(bytes)))
        }, context)
    }

    /// This side's ICE username fragment and password, to send to the peer with the first candidates.
    public func localCredentials() -> (ufrag: String, password: String) {
        var ufrag: UnsafeMutablePointer<gchar>?
        var password: UnsafeMutablePointer<gchar>?
        nice_agent_get_local_credentials(agent, stream, &ufrag, &password)
        defer {
            g_free(ufrag)
            g_free(password)
        }
        return (ufrag.map { String(cString: $0) } ?? "", password.map { String(cString: $0) } ?? "")
    }

    /// Starts gathering: each local candidate comes as `.localCandidate`, then `.gatheringDone`.
    public func start() {
        guard isOpen else { return }
        nice_agent_gather_candidates(agent, stream)
    }

    /// The peer's credentials; set them before its candidates.
    public func setRemote(ufrag: String, password: String) {
        guard isOpen else { return }
        nice_agent_set_remote_credentials(agent, stream, ufrag, password)
    }

    /// One of the peer's candidates in SDP form (`a=candidate:…` or without the `a=`); false when it does not parse.
    @discardableResult
    public func addRemoteCandidate(_ sdp: String) -> Bool {
        guard isOpen, let candidate = nice_agent_parse_remote_candidate_sdp(agent, stream, sdp) else { return false }
        defer { nice_candidate_free(candidate) }
        var list = GSList(data: UnsafeMutableRawPointer(candidate), next: nil)
        return nice_agent_set_remote_candidates(agent, stream, Self.component, &list) > 0
    }

    /// The peer has sent all its candidates: from now on, checks that all fail end in `.failed`.
    public func remoteGatheringDone() {
        guard isOpen else { return }
        nice_agent_peer_candidate_gathering_done(agent, stream)
    }

    /// Sends one datagram over the selected pair; false when there is none yet (or the agent is closed).
    @discardableResult
    public func send(_ bytes: [UInt8]) -> Bool {
        guard isOpen else { return false }
        let sent = bytes.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: gchar.self) { nice_agent_send(agent, stream, Self.component, UInt32(buffer.count), $0.baseAddress) }
        }
        return sent == bytes.count
    }

    /// The pair last selected, if any.
    public var selectedPair: (local: CandidateInfo, remote: CandidateInfo)? { lock.withLock { selected } }

    public var currentState: ICEState { lock.withLock { state } }

    /// Stops the agent: no event comes after the ICE thread has handled this; TURN allocations are released
    /// (`nice_agent_close_async`) before libnice's last reference goes.
    public func close() {
        let wasOpen = lock.withLock {
            defer { closed = true }
            return !closed
        }
        guard wasOpen else { return }
        let handle = Handle(agent)
        let context = UInt(bitPattern: Unmanaged.passUnretained(self).toOpaque())
        let (stream, component) = (stream, Self.component)
        ICELoop.shared.perform {
            let data = UnsafeMutableRawPointer(bitPattern: context)
            cnice_disconnect_all(handle.agent, data)
            nice_agent_attach_recv(handle.agent, stream, component, ICELoop.shared.context, nil, nil)
            nice_agent_close_async(handle.agent, { source, _, data in
                g_object_unref(UnsafeMutableRawPointer(source))
                if let data { Unmanaged<ICEAgent>.fromOpaque(data).release() }
            }, data)
        }
    }

    /// The agent's pointer, handed to the ICE thread for the teardown.
    private struct Handle: @unchecked Sendable {
        let agent: OpaquePointer
        init(_ agent: OpaquePointer) { self.agent = agent }
    }

    private var isOpen: Bool { lock.withLock { !closed } }

    // MARK: callbacks, on the ICE thread

    private func localCandidate(_ candidate: UnsafeMutablePointer<NiceCandidate>) {
        guard let sdp = nice_agent_generate_local_candidate_sdp(agent, candidate) else { return }
        defer { g_free(sdp) }
        emit(.localCandidate(String(cString: sdp)))
    }

    private func selectedPair(_ local: CandidateInfo, _ remote: CandidateInfo) {
        lock.withLock { selected = (local, remote) }
        emit(.selectedPair(local: local, remote: remote))
    }

    private func stateChanged(_ new: ICEState) {
        lock.withLock { state = new }
        emit(.stateChanged(new))
        if new == .failed { emit(.failed) }
    }

    private func emit(_ event: ICEEvent) {
        guard isOpen else { return }
        onEvent(event)
    }
}
