import Foundation
import NIOCore
import NIOPosix

/// What the daemon offers on the control socket. Called on the server's event loop.
public protocol ControlService: AnyObject, Sendable {
    /// A request; the result or error goes back to the caller.
    func handle(method: String, params: JSONValue, connection: ControlConnection) -> EventLoopFuture<JSONValue>
    /// A notification from a client (no reply), e.g. an audio frame.
    func notification(method: String, params: JSONValue, connection: ControlConnection)
    func closed(_ connection: ControlConnection)
}

/// What the control socket refused or cut short, for `node.info` (docs/control.md).
public struct ControlCounters: Sendable, Codable, Equatable {
    public var connectionsAccepted = 0
    /// Requests over `ControlServer.maxRequestBytes`: refused, and the connection closed.
    public var oversizedRequests = 0
    /// Clients closed because more than `ControlServer.maxQueuedBytes` of answers waited for them to read.
    public var slowClientsClosed = 0
    /// Times `accept` failed (descriptor limit, out of memory) and accepting paused for `acceptBackoff`.
    public var acceptBackoffs = 0
}

/// One client connection; the daemon may push notifications to it.
public final class ControlConnection: Sendable, Hashable {
    public let id: Int
    let channel: Channel
    private let state: ControlServerState

    init(id: Int, channel: Channel, state: ControlServerState) {
        self.id = id
        self.channel = channel
        self.state = state
    }

    public func notify(method: String, params: JSONValue) {
        send(.notification(method: method, params: params))
    }

    /// A notification that may be dropped when the client does not keep up (audio frames): the node's
    /// memory must not grow because a client stopped reading.
    public func notifyIfWritable(method: String, params: JSONValue) {
        guard channel.isWritable else { return }
        notify(method: method, params: params)
    }

    /// Whether the client is still connected.
    public var isOpen: Bool { channel.isActive }

    func send(_ message: RPCMessage) { send(line: message.encodedLine()) }

    /// Queues a line for the client. A client that lets more than `maxQueuedBytes` pile up (it sends and
    /// never reads) is closed and counted: what waits for it is freed with it.
    func send(line: [UInt8]) {
        guard channel.eventLoop.inEventLoop else {
            channel.eventLoop.execute { self.send(line: line) }
            return
        }
        let queued = (try? channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
        guard queued + line.count <= ControlServer.maxQueuedBytes else {
            if channel.isActive { state.count { $0.slowClientsClosed += 1 } }
            channel.close(promise: nil)
            return
        }
        var buffer = channel.allocator.buffer(capacity: line.count)
        buffer.writeBytes(line)
        channel.writeAndFlush(buffer, promise: nil)
    }

    public static func == (a: ControlConnection, b: ControlConnection) -> Bool { a.id == b.id }
    public func hash(into h: inout Hasher) { h.combine(id) }
}

/// JSON-RPC 2.0 over a Unix stream socket with owner-only permissions, one message per line.
public final class ControlServer: Sendable {
    /// A request (or batch) longer than this is refused and its connection closed. Audio frames are ~2.7 KB;
    /// parsing 64 KiB of JSON holds the event loop a few ms (docs/control.md, Tools/bench-control).
    public static let maxRequestBytes = 64 << 10
    /// Answers and notifications that may wait for one client to read before it is closed.
    public static let maxQueuedBytes = 4 << 20
    /// How long accepting pauses after `accept` failed (at the descriptor limit it would fail at once again).
    public static let acceptBackoff = TimeAmount.milliseconds(500)
    public let path: String
    private let channel: Channel
    private let state: ControlServerState

    private init(path: String, channel: Channel, state: ControlServerState) {
        self.path = path
        self.channel = channel
        self.state = state
    }

    public var counters: ControlCounters { state.counters }

    public static func start(path: String, on group: EventLoopGroup, service: ControlService) throws -> ControlServer {
        if let attributes = try? FileManager.default.attributesOfItem(atPath: path) {
            guard attributes[.type] as? FileAttributeType == .typeSocket else {
                throw RPCError.failed("control socket \(path) exists and is not a socket")
            }
            if ControlClient.isListening(path: path) {
                throw RPCError.failed("control socket \(path) is in use by another node")
            }
            try FileManager.default.removeItem(atPath: path)
        }
        let state = ControlServerState()
        let oldMask = umask(0o177)
        defer { umask(oldMask) }
        let channel = try ServerBootstrap(group: group)
            .serverChannelInitializer { server in
                server.eventLoop.makeCompletedFuture {
                    try server.pipeline.syncOperations.addHandler(AcceptPause(state: state))
                }
            }
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture {
                    let connection = ControlConnection(id: state.nextConnection(), channel: child, state: state)
                    try child.pipeline.syncOperations.addHandler(ControlHandler(connection: connection, service: service, state: state))
                }
            }
            .bind(unixDomainSocketPath: path).wait()
        chmod(path, 0o600)
        return ControlServer(path: path, channel: channel, state: state)
    }

    /// Stops accepting connections and removes the socket file; safe to call on the event loop.
    public func close() {
        channel.close(promise: nil)
        unlink(path)
    }
}

/// Connection ids and counters, shared by the server's handlers.
final class ControlServerState: @unchecked Sendable {
    private let lock = NSLock()
    private var lastID = 0
    private var figures = ControlCounters()

    func nextConnection() -> Int {
        lock.withLock {
            lastID += 1
            figures.connectionsAccepted += 1
            return lastID
        }
    }

    func count(_ change: (inout ControlCounters) -> Void) { lock.withLock { change(&figures) } }

    var counters: ControlCounters { lock.withLock { figures } }
}

/// Pauses accepting for `acceptBackoff` after `accept` failed (EMFILE/ENFILE at the descriptor limit, ENOMEM).
/// NIO's `AcceptBackoffHandler` does not help here: when the first accept of a wake-up
/// fails, NIO leaves the socket registered for reading, epoll reports it again at once and accept fails again
/// (measured: 13,500 failing `accept4` calls in 2 s, the node at 40–100 % CPU). Turning autoRead off
/// unregisters it; turning it on again after the pause registers it again.
private final class AcceptPause: ChannelInboundHandler {
    typealias InboundIn = Channel
    let state: ControlServerState
    var paused = false

    init(state: ControlServerState) { self.state = state }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard error is IOError else { return context.fireErrorCaught(error) }
        guard !paused, let options = context.channel.syncOptions else { return }
        paused = true
        state.count { $0.acceptBackoffs += 1 }
        try? options.setOption(.autoRead, value: false)
        context.eventLoop.assumeIsolated().scheduleTask(in: ControlServer.acceptBackoff) {
            self.paused = false
            try? options.setOption(.autoRead, value: true)
        }
    }
}

/// Splits the byte stream into lines and answers each: a request, a notification or a batch (§6).
private final class ControlHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let connection: ControlConnection
    let service: ControlService
    let state: ControlServerState
    /// Bytes of a line not complete yet; never more than `maxRequestBytes`.
    var pending: [UInt8] = []
    var refused = false

    init(connection: ControlConnection, service: ControlService, state: ControlServerState) {
        self.connection = connection
        self.service = service
        self.state = state
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        let buffer = unwrapInboundIn(data)
        var searchFrom = pending.count
        pending.append(contentsOf: buffer.readableBytesView)
        var lineStart = 0
        while let newline = pending[searchFrom...].firstIndex(of: UInt8(ascii: "\n")) {
            guard newline - lineStart <= ControlServer.maxRequestBytes else { return refuse(context: context) }
            dispatch(pending[lineStart..<newline], on: context.eventLoop)
            lineStart = newline + 1
            searchFrom = lineStart
        }
        pending.removeFirst(lineStart)
        if pending.count > ControlServer.maxRequestBytes { refuse(context: context) }
    }

    /// An over-long request: one error, then the connection closes (nothing of it is parsed).
    private func refuse(context: ChannelHandlerContext) {
        refused = true
        pending = []
        state.count { $0.oversizedRequests += 1 }
        let error = RPCMessage.failure(id: nil, error: .invalidRequest(
            "request longer than \(ControlServer.maxRequestBytes) bytes; connection closed"))
        var buffer = context.channel.allocator.buffer(capacity: 128)
        buffer.writeBytes(error.encodedLine())
        let channel = context.channel
        channel.writeAndFlush(buffer).whenComplete { _ in channel.close(promise: nil) }
    }

    private func dispatch(_ line: ArraySlice<UInt8>, on loop: EventLoop) {
        guard line.contains(where: { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\r") && $0 != UInt8(ascii: "\t") }) else { return }
        let connection = self.connection
        switch RPCIncoming(line: line) {
        case nil:
            connection.send(.failure(id: nil, error: .parse("not a JSON-RPC 2.0 message")))
        case .single(let message):
            answer(message, on: loop).whenSuccess { response in
                if let response { connection.send(response) }
            }
        case .batch(let messages) where messages.isEmpty:
            connection.send(.failure(id: nil, error: .invalidRequest("an empty batch")))
        case .batch(let messages):
            // One array of the answers once all are done; none at all when the batch held only notifications.
            EventLoopFuture.whenAllSucceed(messages.map { answer($0, on: loop) }, on: loop).whenSuccess { responses in
                let answers = responses.compactMap { $0 }
                if !answers.isEmpty { connection.send(line: RPCMessage.encodedLine(batch: answers)) }
            }
        }
    }

    /// The answer to one message, or nil for a notification (it gets none).
    private func answer(_ message: RPCMessage?, on loop: EventLoop) -> EventLoopFuture<RPCMessage?> {
        guard let message, message.jsonrpc == "2.0", let method = message.method else {
            return loop.makeSucceededFuture(.failure(id: message?.id, error: .invalidRequest("expected a JSON-RPC 2.0 request")))
        }
        let params = message.params ?? .object([:])
        guard let id = message.id else {
            service.notification(method: method, params: params, connection: connection)
            return loop.makeSucceededFuture(nil)
        }
        return service.handle(method: method, params: params, connection: connection)
            .hop(to: loop)
            .map { .response(id: id, result: $0) }
            .recover { .failure(id: id, error: $0 as? RPCError ?? .failed("\($0)")) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        service.closed(connection)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
