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

/// One client connection; the daemon may push notifications to it.
public final class ControlConnection: Sendable, Hashable {
    public let id: Int
    let channel: Channel

    init(id: Int, channel: Channel) {
        self.id = id
        self.channel = channel
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

    func send(_ message: RPCMessage) {
        let line = message.encodedLine()
        var buffer = channel.allocator.buffer(capacity: line.count)
        buffer.writeBytes(line)
        channel.writeAndFlush(buffer, promise: nil)
    }

    public static func == (a: ControlConnection, b: ControlConnection) -> Bool { a.id == b.id }
    public func hash(into h: inout Hasher) { h.combine(id) }
}

/// JSON-RPC 2.0 over a Unix stream socket with owner-only permissions, one message per line.
public final class ControlServer: Sendable {
    /// Requests longer than this are refused; audio frames are far smaller.
    public static let maxLineBytes = 1 << 20
    public let path: String
    private let channel: Channel

    private init(path: String, channel: Channel) {
        self.path = path
        self.channel = channel
    }

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
        let counter = ConnectionCounter()
        let oldMask = umask(0o177)
        defer { umask(oldMask) }
        let channel = try ServerBootstrap(group: group)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture {
                    let connection = ControlConnection(id: counter.next(), channel: child)
                    try child.pipeline.syncOperations.addHandler(ControlHandler(connection: connection, service: service))
                }
            }
            .bind(unixDomainSocketPath: path).wait()
        chmod(path, 0o600)
        return ControlServer(path: path, channel: channel)
    }

    /// Stops accepting connections and removes the socket file; safe to call on the event loop.
    public func close() {
        channel.close(promise: nil)
        unlink(path)
    }
}

private final class ConnectionCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func next() -> Int {
        lock.lock()
        defer { lock.unlock() }
        value += 1
        return value
    }
}

private final class ControlHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let connection: ControlConnection
    let service: ControlService
    var pending: [UInt8] = []

    init(connection: ControlConnection, service: ControlService) {
        self.connection = connection
        self.service = service
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        pending.append(contentsOf: buffer.readBytes(length: buffer.readableBytes) ?? [])
        while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
            let line = Array(pending[..<newline])
            pending.removeSubrange(...newline)
            dispatch(line)
        }
        if pending.count > ControlServer.maxLineBytes {
            connection.send(.failure(id: nil, error: .invalidRequest("message longer than \(ControlServer.maxLineBytes) bytes")))
            context.close(promise: nil)
        }
    }

    private func dispatch(_ line: [UInt8]) {
        guard !line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") }) else { return }
        guard let message = RPCMessage.decode(line: line) else {
            connection.send(.failure(id: nil, error: .parse("not a JSON-RPC 2.0 message")))
            return
        }
        guard message.jsonrpc == "2.0", let method = message.method else {
            connection.send(.failure(id: message.id, error: .invalidRequest("expected a JSON-RPC 2.0 request")))
            return
        }
        let params = message.params ?? .object([:])
        guard let id = message.id else {
            service.notification(method: method, params: params, connection: connection)
            return
        }
        let connection = self.connection
        service.handle(method: method, params: params, connection: connection).whenComplete { result in
            switch result {
            case .success(let value): connection.send(.response(id: id, result: value))
            case .failure(let error as RPCError): connection.send(.failure(id: id, error: error))
            case .failure(let error): connection.send(.failure(id: id, error: .failed("\(error)")))
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        service.closed(connection)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
