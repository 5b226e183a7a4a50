import CMeshIO
import Foundation
import MeshLink
import NIOCore

/// The node's UDP socket: read by a `UDPReader` thread, written in batches from the event loop (`send(_:)`).
///
/// Decision: the node does its own socket I/O instead of SwiftNIO's datagram channel. That channel closes itself on
/// any send error except EMSGSIZE and EHOSTUNREACH, and a node sends to many peers: one send refused by a local
/// firewall (EPERM), to a network that is not routed (ENETUNREACH), or to an address of the wrong family must cost
/// that one datagram, not the node's only socket (which left the node running but deaf). And its read path turned
/// every source address into text (inet_ntop) for every datagram: a tenth of a relay's work per forwarded packet
/// (docs/performance.md).
///
/// Decision (docs/links.md, "The socket"): the kernel's default receive buffer (212 KB here) overflowed at 60,000
/// junk datagrams/s and dropped 31 % of a call's media while the node was only 60 % busy. The node asks for
/// `socket_buffer` bytes each way: with SO_RCVBUFFORCE/SO_SNDBUFFORCE as root (past `net.core.rmem_max`), else
/// SO_RCVBUF/SO_SNDBUF (capped by the kernel), and reports what it got.
struct UDPSocket {
    let descriptor: CInt

    /// A non-blocking UDP socket bound to `address`, with `bufferBytes` asked for each way.
    init(binding address: SocketAddress, bufferBytes: Int) throws {
        let family = address.protocol.rawValue
        let fd = socket(family, CInt(SOCK_DGRAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw IOError(errnoCode: errno, reason: "socket") }
        var size = CInt(clamping: bufferBytes)
        for (forced, plain) in [(SO_RCVBUFFORCE, SO_RCVBUF), (SO_SNDBUFFORCE, SO_SNDBUF)] {
            if setsockopt(fd, SOL_SOCKET, forced, &size, socklen_t(MemoryLayout<CInt>.size)) != 0 {
                _ = setsockopt(fd, SOL_SOCKET, plain, &size, socklen_t(MemoryLayout<CInt>.size))
            }
        }
        let bound = address.withSockAddr { bind(fd, $0, socklen_t($1)) }
        guard bound == 0 else {
            let code = errno
            _ = Glibc.close(fd)
            throw IOError(errnoCode: code, reason: "bind")
        }
        descriptor = fd
    }

    /// The buffer sizes the kernel granted, as it reports them (it doubles the size asked for, to account for its
    /// own overhead), and the datagrams it dropped because the receive buffer was full (SO_MEMINFO).
    func status() -> (receiveBufferBytes: Int, sendBufferBytes: Int, kernelDrops: Int)? {
        // SO_MEMINFO fills u32 sk_meminfo[SK_MEMINFO_VARS]: 1 = RCVBUF, 3 = SNDBUF, 8 = DROPS (linux/sock_diag.h).
        var info = [UInt32](repeating: 0, count: 9)
        var length = socklen_t(info.count * MemoryLayout<UInt32>.size)
        guard getsockopt(descriptor, SOL_SOCKET, Self.soMeminfo, &info, &length) == 0, length >= 36 else { return nil }
        return (Int(info[1]), Int(info[3]), Int(info[8]))
    }

    private static let soMeminfo: CInt = 55

    func close() {
        _ = Glibc.close(descriptor)
    }

    /// The address and port the socket is bound to (the port the kernel chose for port 0).
    var localAddress: SocketAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let ok = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) == 0 }
        }
        return ok ? Self.address(storage) : nil
    }

    /// A source address as the link layer keys it. SwiftNIO's `SocketAddress` also carries a host name: left empty
    /// here (equality and hashing look at the address and port only), so no text is made per datagram.
    static func address(_ storage: sockaddr_storage) -> SocketAddress? {
        var storage = storage
        switch CInt(storage.ss_family) {
        case AF_INET: return withUnsafeBytes(of: &storage) { SocketAddress($0.load(as: sockaddr_in.self), host: "") }
        case AF_INET6: return withUnsafeBytes(of: &storage) { SocketAddress($0.load(as: sockaddr_in6.self), host: "") }
        default: return nil
        }
    }

    /// Sends every datagram of `batch` (sendmmsg, 64 a call) and empties it; returns the errno of each datagram
    /// the kernel refused (EAGAIN: the socket buffer is full, the datagram is dropped as a congested network would).
    func send(_ batch: inout Outbox) -> [(SocketAddress, CInt)] {
        defer { batch.removeAll() }
        guard !batch.datagrams.isEmpty else { return [] }
        let count = UInt32(batch.datagrams.count)
        let refused = batch.bytes.withUnsafeBufferPointer { bytes in
            batch.datagrams.withUnsafeMutableBufferPointer { mesh_send_batch(descriptor, bytes.baseAddress, $0.baseAddress, count) }
        }
        guard refused > 0 else { return [] }
        return zip(batch.datagrams, batch.addresses).filter { $0.0.error != 0 }.map { ($0.1, $0.0.error) }
    }
}

/// Reads the node's UDP port on a thread of its own into a fixed pool of `inFlight` batch buffers, up to `batch`
/// datagrams per recvmmsg, and hands full buffers to the event loop: `wake` runs (on the reader thread) when the
/// loop must call `drain`, which works through every buffer that is ready and gives each back. Nothing is allocated
/// per datagram or per batch (docs/performance.md, "Allocations"): the buffers are reused, a source address is
/// made once per address and port, and the loop is woken only when it is not already due to drain. When all
/// buffers wait for the loop, the thread waits too and the kernel's receive buffer absorbs the rest (and drops
/// what does not fit, counted in `udp_kernel_drops`), as with any reader that is too slow.
///
/// Isolation (docs/architecture.md): a buffer belongs to the reader thread until it is queued and to the event
/// loop until it is given back; both queues are guarded by one lock. The thread touches no runtime state.
final class UDPReader: @unchecked Sendable {
    static let batch = 32
    static let slotBytes = 2_048
    static let inFlight = 8
    /// Batches one `drain` takes at most: 2,048 datagrams, a few milliseconds of work (each turn back to the loop
    /// costs a task, so not fewer).
    static let drainLimit = 64

    /// One recvmmsg's worth of datagrams, each in its slot, and where each came from.
    final class Batch: @unchecked Sendable {
        fileprivate let slots = UnsafeMutablePointer<UInt8>.allocate(capacity: UDPReader.batch * UDPReader.slotBytes)
        fileprivate(set) var sources: [SocketAddress] = []
        fileprivate var lengths: [Int] = []

        fileprivate init() {
            sources.reserveCapacity(UDPReader.batch)
            lengths.reserveCapacity(UDPReader.batch)
        }

        deinit { slots.deallocate() }

        /// The bytes of datagram `i`, valid until the batch is given back.
        func datagram(_ i: Int) -> UnsafeRawBufferPointer {
            UnsafeRawBufferPointer(start: slots + i * UDPReader.slotBytes, count: lengths[i])
        }
    }

    private let descriptor: CInt
    private let lock = NSLock()
    private var stopping = false
    private var free: [Batch] = (0..<UDPReader.inFlight).map { _ in Batch() }
    private var ready: [Batch] = []
    private var drainDue = false
    private let finished = DispatchSemaphore(value: 0)
    /// Free buffers. Made at 0 and signalled `inFlight` times: libdispatch traps when a semaphore is freed below
    /// the value it was made with, which is where this one stands when the node stops with batches still queued to
    /// the event loop (seen as a crash at SIGTERM after calls, nat-lab homes).
    private let credits = DispatchSemaphore(value: 0)

    init(socket: UDPSocket) {
        descriptor = socket.descriptor
        free.reserveCapacity(Self.inFlight)
        ready.reserveCapacity(Self.inFlight)
        for _ in 0..<Self.inFlight { credits.signal() }
    }

    /// Starts reading, once the caller has stored this reader (the first datagrams can arrive at once, and `wake`
    /// must find it). `wake` runs on the reader thread when the event loop must call `drain`; `failed` once, if the
    /// socket fails for good.
    func start(wake: @escaping @Sendable () -> Void, failed: @escaping @Sendable (CInt) -> Void) {
        let thread = Thread { [self] in
            read(wake: wake, failed: failed)
            finished.signal()
        }
        thread.name = "udp-reader"
        thread.start()
    }

    /// On the event loop: the ready batches to `body`, in order, each given back to the reader after — at most
    /// `drainLimit` of them, so that a reader refilling them as fast as they go back cannot keep the loop here for
    /// ever. True when more may be ready: the caller drains again after what the loop has queued meanwhile (the
    /// turn's sends, timers). Nothing once the reader is stopping.
    func drain(_ body: (Batch) -> Void) -> Bool {
        guard !isStopping else { return false }
        for _ in 0..<Self.drainLimit {
            guard let batch = lock.withLock({ () -> Batch? in
                guard !ready.isEmpty else {
                    drainDue = false
                    return nil
                }
                return ready.removeFirst()
            }) else { return false }
            body(batch)
            lock.withLock { free.append(batch) }
            credits.signal()
        }
        return true
    }

    /// Stops the thread (within 100 ms: its poll timeout) and waits for it.
    func stop() {
        lock.withLock { stopping = true }
        finished.wait()
    }

    private var isStopping: Bool { lock.withLock { stopping } }

    private func read(wake: @Sendable () -> Void, failed: @Sendable (CInt) -> Void) {
        var received = [mesh_received](repeating: mesh_received(), count: Self.batch)
        var sources = SourceCache()
        while !isStopping {
            guard credits.wait(timeout: .now() + .milliseconds(100)) == .success else { continue }
            let batch = lock.withLock { free.removeLast() }
            let n = received.withUnsafeMutableBufferPointer {
                mesh_receive_batch(descriptor, batch.slots, Self.slotBytes, $0.baseAddress, UInt32(Self.batch), 100)
            }
            let code = n < 0 ? errno : 0
            batch.sources.removeAll(keepingCapacity: true)
            batch.lengths.removeAll(keepingCapacity: true)
            for i in 0..<Int(max(n, 0)) {
                guard let source = sources.address(received[i].address) else { continue }
                if batch.lengths.count < i { (batch.slots + batch.lengths.count * Self.slotBytes).update(from: batch.slots + i * Self.slotBytes, count: received[i].length) }
                batch.sources.append(source)
                batch.lengths.append(received[i].length)
            }
            guard !batch.lengths.isEmpty else {
                lock.withLock { free.append(batch) }
                credits.signal()
                // Only a descriptor that is gone ends the reading; anything else costs that one read.
                if code == EBADF || code == ENOTSOCK || code == EINVAL {
                    failed(code)
                    return
                }
                continue
            }
            let mustWake = lock.withLock { () -> Bool in
                ready.append(batch)
                defer { drainDue = true }
                return !drainDue
            }
            if mustWake { wake() }
        }
    }
}

/// The reader's source addresses, made once per address and port: a `SocketAddress` is a boxed value (an
/// allocation), and a relay hears the same few neighbours all the time.
private struct SourceCache {
    static let limit = 4_096
    private var known: [SourceKey: SocketAddress] = [:]

    /// The raw address bytes of a source: IPv4 or IPv6 address, port, scope.
    private struct SourceKey: Hashable {
        let family: sa_family_t
        let port: UInt16
        let high: UInt64
        let low: UInt64
        let scope: UInt32
    }

    mutating func address(_ storage: sockaddr_storage) -> SocketAddress? {
        let family = CInt(storage.ss_family)
        let key: SourceKey? = withUnsafeBytes(of: storage) { raw in
            switch family {
            case AF_INET:
                let a = raw.load(as: sockaddr_in.self)
                return SourceKey(family: a.sin_family, port: a.sin_port, high: 0, low: UInt64(a.sin_addr.s_addr), scope: 0)
            case AF_INET6:
                let a = raw.load(as: sockaddr_in6.self)
                let words = withUnsafeBytes(of: a.sin6_addr) { ($0.loadUnaligned(as: UInt64.self), $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) }
                return SourceKey(family: a.sin6_family, port: a.sin6_port, high: words.0, low: words.1, scope: a.sin6_scope_id)
            default:
                return nil
            }
        }
        guard let key else { return nil }
        if let address = known[key] { return address }
        guard let address = UDPSocket.address(storage) else { return nil }
        if known.count >= Self.limit { known.removeAll(keepingCapacity: true) }
        known[key] = address
        return address
    }
}

/// Datagrams waiting for the end of the event loop's turn, to leave together: their bytes in one reused buffer.
struct Outbox: DatagramSink {
    /// The datagrams' bytes back to back: `used` of them; the storage only grows (no zeroing per datagram).
    fileprivate var bytes: [UInt8] = []
    private var used = 0
    fileprivate var datagrams: [mesh_datagram] = []
    fileprivate var addresses: [SocketAddress] = []

    var isEmpty: Bool { datagrams.isEmpty }
    var count: Int { datagrams.count }

    mutating func append(_ datagram: [UInt8], to address: SocketAddress) {
        datagram.withUnsafeBytes { source in append(length: source.count, to: address) { $0.copyMemory(from: source) } }
    }

    /// A datagram written in place by `write` (a link seal: the forwarding path's only copy of a packet).
    mutating func append(length: Int, to address: SocketAddress, write: (UnsafeMutableRawBufferPointer) -> Void) {
        var entry = mesh_datagram()
        entry.offset = used
        entry.length = length
        address.withSockAddr { pointer, length in
            withUnsafeMutableBytes(of: &entry.address) { $0.copyMemory(from: UnsafeRawBufferPointer(start: pointer, count: length)) }
            entry.address_length = socklen_t(length)
        }
        used += length
        if bytes.count < used { bytes.append(contentsOf: repeatElement(0, count: max(used - bytes.count, 16_384))) }
        bytes.withUnsafeMutableBytes { write(UnsafeMutableRawBufferPointer(rebasing: $0[entry.offset..<used])) }
        datagrams.append(entry)
        addresses.append(address)
    }

    mutating func removeAll() {
        used = 0
        datagrams.removeAll(keepingCapacity: true)
        addresses.removeAll(keepingCapacity: true)
    }
}

/// The link layer's view of a UDP source (docs/links.md): cookies are bound to address and port, rate limits
/// count per host (IPv4 address, IPv6 /64).
extension SocketAddress: LinkEndpoint {
    public var cookieBytes: [UInt8] {
        switch self {
        case .v4(let a): withUnsafeBytes(of: a.address.sin_addr) { Array($0) } + withUnsafeBytes(of: a.address.sin_port) { Array($0) }
        case .v6(let a): withUnsafeBytes(of: a.address.sin6_addr) { Array($0) } + withUnsafeBytes(of: a.address.sin6_port) { Array($0) }
        case .unixDomainSocket: Array(description.utf8)
        }
    }

    public var rateLimitKey: [UInt8] {
        switch self {
        case .v4(let a): withUnsafeBytes(of: a.address.sin_addr) { Array($0) }
        case .v6(let a):
            withUnsafeBytes(of: a.address.sin6_addr) { raw in
                // An IPv4 peer on a dual-stack socket (::ffff:a.b.c.d) counts as its IPv4 address, not as ::ffff:0:0/64.
                raw.prefix(12).elementsEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]) ? Array(raw.suffix(4)) : Array(raw.prefix(8))
            }
        case .unixDomainSocket: Array(description.utf8)
        }
    }
}
