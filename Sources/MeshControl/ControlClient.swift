import Foundation

/// A blocking JSON-RPC client for the control socket, used by `node-ctl` and `mesh-node call`.
/// Notifications the daemon pushes are handed to `onNotification` on the reader thread.
public final class ControlClient: @unchecked Sendable {
    private let fd: Int32
    private let lock = NSCondition()
    private var nextID = 1
    private var responses: [RPCID: RPCMessage] = [:]
    private var closed = false
    private let onNotification: @Sendable (RPCMessage) -> Void

    public init(path: String, onNotification: @escaping @Sendable (RPCMessage) -> Void = { _ in }) throws(RPCError) {
        self.onNotification = onNotification
        fd = try Self.connect(path: path)
        Thread { self.readLoop() }.start()
    }

    /// Whether something accepts connections at `path`.
    public static func isListening(path: String) -> Bool {
        guard let fd = try? connect(path: path) else { return false }
        Glibc.close(fd)
        return true
    }

    /// How long connecting and each write may block: a node at its descriptor limit leaves connections in
    /// the listen backlog, and once that is full `connect` would wait forever.
    public static let ioTimeout: TimeInterval = 5

    private static func connect(path: String) throws(RPCError) -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw .failed("control socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw .failed("cannot create a socket: \(String(cString: strerror(errno)))") }
        var timeout = timeval(tv_sec: Int(ioTimeout), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            let code = errno
            let reason = String(cString: strerror(code))
            Glibc.close(fd)
            if code == EAGAIN {
                throw .failed("the node at \(path) accepted no connection within \(Int(ioTimeout)) s (overloaded, or at its descriptor limit?)")
            }
            throw .failed("cannot reach the node at \(path): \(reason) (is `mesh-node run` running? see --control-socket)")
        }
        return fd
    }

    /// Sends a request and waits for its response (up to `timeout` seconds).
    public func call(_ method: String, _ params: JSONValue = .object([:]), timeout: TimeInterval = 30) throws(RPCError) -> JSONValue {
        lock.lock()
        let id = RPCID.number(nextID)
        nextID += 1
        lock.unlock()
        try write(.request(id: id, method: method, params: params))
        let deadline = Date().addingTimeInterval(timeout)
        lock.lock()
        defer { lock.unlock() }
        while responses[id] == nil {
            if closed { throw .failed("the node closed the control connection") }
            if !lock.wait(until: deadline) { throw .failed("the node did not answer \(method) within \(Int(timeout)) s") }
        }
        let response = responses.removeValue(forKey: id)!
        if let error = response.error { throw error }
        return response.result ?? .null
    }

    public func notify(_ method: String, _ params: JSONValue) throws(RPCError) {
        try write(.notification(method: method, params: params))
    }

    public func close() {
        lock.lock()
        let wasClosed = closed
        closed = true
        lock.broadcast()
        lock.unlock()
        if !wasClosed { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    private func write(_ message: RPCMessage) throws(RPCError) {
        let line = message.encodedLine()
        var offset = 0
        while offset < line.count {
            let n = line[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else {
                if n < 0, errno == EAGAIN { throw .failed("the node did not read its control connection within \(Int(Self.ioTimeout)) s") }
                throw .failed("the node closed the control connection")
            }
            offset += n
        }
    }

    private func readLoop() {
        var pending: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            pending.append(contentsOf: chunk[0..<n])
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = pending[..<newline]
                if let message = RPCMessage.decode(line: line) { deliver(message) }
                pending.removeSubrange(...newline)
            }
        }
        lock.lock()
        closed = true
        lock.broadcast()
        lock.unlock()
        Glibc.close(fd)
        onNotification(.notification(method: "control.closed", params: .null))
    }

    private func deliver(_ message: RPCMessage) {
        if let id = message.id, message.method == nil {
            lock.lock()
            responses[id] = message
            lock.broadcast()
            lock.unlock()
        } else {
            onNotification(message)
        }
    }
}
