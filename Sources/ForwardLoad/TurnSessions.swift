import Glibc
import MeshStun

/// The sender's TURN client for `--turn` (RFC 8656; docs/performance.md): one UDP socket per session on 127.0.0.1,
/// connected to the TURN server, as each call end would have its own; on each an allocation (REQUESTED-TRANSPORT UDP,
/// no credentials: the server runs with --no-auth), a permission and channel `channel` for the sink's address. In the
/// traffic phase each session's packets go as ChannelData on its own socket, and the server passes their data on to
/// the sink as plain UDP from the session's relayed address (`relayedPorts`). Used by the main thread only.
final class TurnSessions {
    /// Every session binds the same channel number: each has its own allocation, so its own channels.
    static let channel: UInt16 = 0x4000
    /// An unanswered request is sent again after this long, doubling each time (RFC 8489 §6.2.1 starts at 500 ms for
    /// any path; on loopback an answer takes well under a millisecond); a transaction fails after `maxSends` sends.
    static let firstTimeoutNs = 250_000_000
    static let maxSends = 6

    let server: UInt16
    /// Each session's socket, connected to the server.
    private var fds: [Int32] = []
    /// Each session's relayed port on 127.0.0.1 (its allocation's XOR-RELAYED-ADDRESS; 0 until allocated).
    private(set) var relayedPorts: [UInt16]
    /// Datagrams the kernel refused to send after the set-up.
    private(set) var sendErrors = 0

    /// Opens a socket per session (raising the open-file limit when it is too low for them), each connected to the
    /// server on 127.0.0.1:`server`.
    init(sessions: Int, server: UInt16) throws {
        self.server = server
        relayedPorts = Array(repeating: 0, count: sessions)
        try raiseOpenFileLimit(to: sessions + 256)
        fds.reserveCapacity(sessions)
        var address = loopbackAddress(port: server)
        for _ in 0..<sessions {
            let fd = try BatchSocket.bind().fd
            fds.append(fd)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard connected == 0 else { throw LoadError(description: "connect to 127.0.0.1:\(server): \(String(cString: strerror(errno)))") }
        }
    }

    /// Deletes the allocations (a Refresh with LIFETIME 0 on each socket, not waited for: else the server keeps them
    /// for their lifetime, and a later run whose socket gets the same port would meet its old allocation) and closes
    /// the sockets.
    deinit {
        for (session, fd) in fds.enumerated() {
            if relayedPorts[session] != 0 {
                _ = transmit(StunMessage.refreshRequest(transactionID: Self.newTransactionID(), lifetime: 0), session: session)
            }
            close(fd)
        }
    }

    /// The steps of a session's set-up, in order, named as their methods.
    private enum Step: String {
        case allocate = "Allocate", permission = "CreatePermission", bind = "ChannelBind"

        var method: UInt16 {
            switch self {
            case .allocate: StunMessage.Method.allocate
            case .permission: StunMessage.Method.createPermission
            case .bind: StunMessage.Method.channelBind
            }
        }
    }

    /// A session's outstanding request.
    private struct Transaction {
        let step: Step
        let id: [UInt8]
        let request: [UInt8]
        var sends = 1
        var resendAtNs: Int
    }

    /// What an answer to a session's outstanding request means.
    private enum Verdict {
        /// Not an answer to it (a late answer to a request of an earlier step sent twice): ignored.
        case stale
        case succeeded
        /// Allocate succeeded: the relayed port.
        case allocated(UInt16)
        case failed(String)
    }

    /// Sets every session up, at most `window` of them at a time, each one request after the other: Allocate,
    /// CreatePermission and ChannelBind (channel 0x4000) for `peer`. An unanswered request is sent again with its
    /// transaction id; an answer counts only with the transaction id and the method of the outstanding request.
    /// Throws, with every failure counted in one line, unless every session is set up: an error response (its
    /// ERROR-CODE), a malformed answer, no answer after `maxSends` sends or within `timeoutNs`.
    func setUp(peer: StunAddress, window: Int, timeoutNs: Int) throws {
        let deadline = monotonicNs() + timeoutNs
        var open: [Int: Transaction] = [:]
        var failures: [String: Int] = [:]
        var next = 0
        var buffer = [UInt8](repeating: 0, count: 2_048)
        func fail(_ session: Int, _ why: String) {
            failures[why, default: 0] += 1
            open[session] = nil
        }
        while next < fds.count || !open.isEmpty {
            let now = monotonicNs()
            guard now < deadline else {
                for (session, transaction) in open { fail(session, "\(transaction.step.rawValue): no answer within the set-up time") }
                break
            }
            while open.count < window, next < fds.count {
                open[next] = try start(.allocate, session: next, peer: peer, now: now)
                next += 1
            }
            for (session, transaction) in open where now >= transaction.resendAtNs {
                guard transaction.sends < Self.maxSends else {
                    fail(session, "\(transaction.step.rawValue): no answer to \(Self.maxSends) sends")
                    continue
                }
                try write(transaction.request, session: session)
                open[session]?.sends += 1
                open[session]?.resendAtNs = now + Self.firstTimeoutNs << transaction.sends
            }
            let polled = Array(open.keys)
            var poller = polled.map { pollfd(fd: fds[$0], events: Int16(POLLIN), revents: 0) }
            guard poll(&poller, nfds_t(poller.count), 2) > 0 else { continue }
            for (k, entry) in poller.enumerated() where entry.revents != 0 {
                let session = polled[k]
                while let transaction = open[session] {
                    let n = recv(fds[session], &buffer, buffer.count, Int32(MSG_DONTWAIT))
                    guard n >= 0 else {
                        if errno == ECONNREFUSED { throw refused }
                        if errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR {
                            fail(session, "\(transaction.step.rawValue): recv: \(String(cString: strerror(errno)))")
                        }
                        break
                    }
                    switch judge(Array(buffer[..<n]), answering: transaction) {
                    case .stale: break
                    case .failed(let why): fail(session, why)
                    case .allocated(let port):
                        relayedPorts[session] = port
                        open[session] = try start(.permission, session: session, peer: peer, now: monotonicNs())
                    case .succeeded where transaction.step == .permission:
                        open[session] = try start(.bind, session: session, peer: peer, now: monotonicNs())
                    case .succeeded: open[session] = nil
                    }
                }
            }
        }
        guard failures.isEmpty else {
            let failed = failures.values.reduce(0, +)
            let reasons = failures.sorted { ($1.value, $0.key) < ($0.value, $1.key) }.map { "\($0.key) ×\($0.value)" }
            throw LoadError(description: "TURN set-up failed for \(failed) of \(fds.count) sessions: " + reasons.joined(separator: "; "))
        }
        guard Set(relayedPorts).count == relayedPorts.count else {
            throw LoadError(description: "the TURN server gave two sessions the same relayed address")
        }
    }

    /// Sends `step`'s request on `session`'s socket with a new transaction id.
    private func start(_ step: Step, session: Int, peer: StunAddress, now: Int) throws -> Transaction {
        let id = Self.newTransactionID()
        let request = switch step {
        case .allocate: StunMessage.allocateRequest(transactionID: id)
        case .permission: StunMessage.createPermissionRequest(transactionID: id, peer: peer)
        case .bind: StunMessage.channelBindRequest(transactionID: id, channel: Self.channel, peer: peer)
        }
        try write(request, session: session)
        return Transaction(step: step, id: id, request: request, resendAtNs: now + Self.firstTimeoutNs)
    }

    private static func newTransactionID() -> [UInt8] { (0..<12).map { _ in UInt8.random(in: 0...255) } }

    /// What `bytes`, read on the socket of a session with `transaction` outstanding, mean for it.
    private func judge(_ bytes: [UInt8], answering transaction: Transaction) -> Verdict {
        let name = transaction.step.rawValue
        let message: StunMessage
        do {
            message = try StunMessage(parsing: bytes)
        } catch {
            return .failed("\(name): malformed answer (\(error))")
        }
        guard message.transactionID == transaction.id else { return .stale }
        guard message.type.method == transaction.step.method else { return .failed("\(name): answered with type \(message.type)") }
        switch message.type.messageClass {
        case StunMessage.MessageClass.success where transaction.step == .allocate:
            guard let relayed = message.xorRelayedAddress else { return .failed("Allocate: a success without XOR-RELAYED-ADDRESS") }
            guard relayed.ip == [127, 0, 0, 1] else {
                return .failed("Allocate: a relayed address not on 127.0.0.1 (start the server with --relay-ip 127.0.0.1)")
            }
            return .allocated(relayed.port)
        case StunMessage.MessageClass.success:
            return .succeeded
        case StunMessage.MessageClass.error:
            guard let code = message.errorCode else { return .failed("\(name) refused without a valid ERROR-CODE") }
            return .failed("\(name) refused: \(code)" + (code.code == 401 ? " (credentials asked for: start the server with --no-auth)" : ""))
        default:
            return .failed("\(name): answered with type \(message.type)")
        }
    }

    private var refused: LoadError {
        LoadError(description: "nothing answers on 127.0.0.1:\(server) (connection refused): is the TURN server running?")
    }

    /// Sends `bytes` on `session`'s socket; a refusal by the kernel is counted (a datagram of the traffic phase, not
    /// sent again).
    func send(_ bytes: [UInt8], session: Int) {
        if !transmit(bytes, session: session) { sendErrors += 1 }
    }

    /// A set-up request: throws if the server's port is closed (the kernel saw ICMP port unreachable); other errors
    /// are left to the retransmission.
    private func write(_ bytes: [UInt8], session: Int) throws {
        if !transmit(bytes, session: session), errno == ECONNREFUSED { throw refused }
    }

    private func transmit(_ bytes: [UInt8], session: Int) -> Bool {
        bytes.withUnsafeBytes { Glibc.send(fds[session], $0.baseAddress, $0.count, 0) } == bytes.count
    }
}

/// Raises this process's limit of open files to at least `needed` (soft, and as root the hard limit too).
func raiseOpenFileLimit(to needed: Int) throws {
    let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    var limit = rlimit()
    guard getrlimit(resource, &limit) == 0 else { throw LoadError(description: "getrlimit: \(String(cString: strerror(errno)))") }
    guard limit.rlim_cur < rlim_t(needed) else { return }
    limit.rlim_cur = rlim_t(needed)
    limit.rlim_max = max(limit.rlim_max, rlim_t(needed))
    guard setrlimit(resource, &limit) == 0 else {
        throw LoadError(description: "\(needed) open files needed (one socket per session): setrlimit: \(String(cString: strerror(errno)))")
    }
}
