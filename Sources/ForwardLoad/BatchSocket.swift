import CBatchIO
import Glibc
import MeshLink

struct LoadError: Error, CustomStringConvertible { let description: String }

/// The generator's view of a UDP source or destination: a port on 127.0.0.1 (the benchmark runs on loopback only).
struct LoopbackPort: LinkEndpoint {
    let port: UInt16
    var cookieBytes: [UInt8] { [127, 0, 0, 1, UInt8(port >> 8), UInt8(port & 0xFF)] }
    var rateLimitKey: [UInt8] { [127, 0, 0, 1] }
    var description: String { "127.0.0.1:\(port)" }
}

/// 127.0.0.1:`port` as the socket calls take it.
func loopbackAddress(port: UInt16) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    return address
}

/// One end's UDP socket on 127.0.0.1, read and written in batches of up to 64 datagrams (recvmmsg, sendmmsg through
/// CBatchIO). Owned by one thread: the descriptor is made by `bind()` on the main thread, the buffers by the owner.
final class BatchSocket {
    static let batch = Int(BATCHIO_MAX)
    static let slotBytes = 2_048

    let fd: Int32
    private let inSlots: UnsafeMutablePointer<UInt8>
    private let inLengths: UnsafeMutablePointer<Int32>
    private let inPorts: UnsafeMutablePointer<UInt16>
    private let outSlots: UnsafeMutablePointer<UInt8>
    private let outLengths: UnsafeMutablePointer<Int32>
    private let outPorts: UnsafeMutablePointer<UInt16>
    private var queued = 0
    /// Datagrams the kernel refused to send (counted, not retried).
    private(set) var sendErrors = 0

    /// A UDP socket bound to 127.0.0.1 on a port the kernel picks, asking for 4 MiB of buffer each way.
    static func bind() throws -> (fd: Int32, port: UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw LoadError(description: "socket: \(String(cString: strerror(errno)))") }
        var size: Int32 = 4 << 20
        for (forced, plain) in [(SO_RCVBUFFORCE, SO_RCVBUF), (SO_SNDBUFFORCE, SO_SNDBUF)] {
            if setsockopt(fd, SOL_SOCKET, forced, &size, socklen_t(MemoryLayout<Int32>.size)) != 0 {
                _ = setsockopt(fd, SOL_SOCKET, plain, &size, socklen_t(MemoryLayout<Int32>.size))
            }
        }
        var address = loopbackAddress(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else {
            close(fd)
            throw LoadError(description: "bind 127.0.0.1: \(String(cString: strerror(errno)))")
        }
        return (fd, UInt16(bigEndian: address.sin_port))
    }

    init(fd: Int32) {
        self.fd = fd
        inSlots = .allocate(capacity: Self.batch * Self.slotBytes)
        outSlots = .allocate(capacity: Self.batch * Self.slotBytes)
        inLengths = .allocate(capacity: Self.batch)
        outLengths = .allocate(capacity: Self.batch)
        inPorts = .allocate(capacity: Self.batch)
        outPorts = .allocate(capacity: Self.batch)
    }

    deinit {
        inSlots.deallocate()
        outSlots.deallocate()
        inLengths.deallocate()
        outLengths.deallocate()
        inPorts.deallocate()
        outPorts.deallocate()
    }

    /// Waits up to `timeoutNs` (0: not at all) for datagrams; returns how many were read (at most `batch`).
    func receive(timeoutNs: Int) -> Int {
        Int(batchio_receive(fd, inSlots, Int32(Self.slotBytes), Int32(Self.batch), inLengths, inPorts, timeoutNs))
    }

    /// The bytes of datagram `i` of the last `receive`.
    func datagram(_ i: Int) -> [UInt8] {
        [UInt8](UnsafeBufferPointer(start: inSlots + i * Self.slotBytes, count: size(i)))
    }

    /// The size of datagram `i` of the last `receive`.
    func size(_ i: Int) -> Int { Int(inLengths[i]) }

    /// The source port of datagram `i` of the last `receive`.
    func source(_ i: Int) -> UInt16 { inPorts[i] }

    /// Queues a datagram to 127.0.0.1:`port`; a full batch goes out at once.
    func queue(_ bytes: [UInt8], to port: UInt16) {
        precondition(bytes.count <= Self.slotBytes, "datagram of \(bytes.count) bytes")
        let slot = outSlots + queued * Self.slotBytes
        bytes.withUnsafeBufferPointer { slot.update(from: $0.baseAddress!, count: $0.count) }
        outLengths[queued] = Int32(bytes.count)
        outPorts[queued] = port
        queued += 1
        if queued == Self.batch { flush() }
    }

    /// Sends every queued datagram (the socket blocks while its send buffer is full).
    func flush() {
        guard queued > 0 else { return }
        sendErrors += Int(batchio_send(fd, outSlots, Int32(Self.slotBytes), outLengths, outPorts, Int32(queued)))
        queued = 0
    }
}
