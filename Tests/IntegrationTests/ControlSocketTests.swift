import Foundation
import MeshControl
import Testing

/// The control socket against clients that misbehave (issue 8, item 3): over-long requests, clients that
/// never read, too many clients for the node's descriptors; and JSON-RPC 2.0 string ids and batches.
@Suite struct ControlSocketTests {
    @Test func oversizedRequestIsRefusedAndTheNodeStillAnswers() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let node = try NodeProcess("n", in: scratch, arguments: [])
        defer { node.stop() }
        let padding = String(repeating: "x", count: 100_000)
        // A complete line over the bound, and one that never ends.
        for request in [#"{"jsonrpc":"2.0","id":1,"method":"node.info","params":{"pad":"\#(padding)"}}"# + "\n",
                        #"{"jsonrpc":"2.0","id":2,"method":"node.info","params":{"pad":"\#(padding)"#] {
            let raw = try RawSocket(path: node.socket)
            defer { raw.close() }
            raw.write(Array(request.utf8))
            let lines = raw.readLinesUntilClosed(timeout: 10)
            #expect(lines.count == 1, "\(lines)")
            let answer = try decodeJSON(lines.first ?? "")
            #expect(answer["error"]?["code"]?.intValue == -32600)
            #expect(answer["result"] == nil)
        }
        let info = try node.ctlJSON(["info"])
        #expect(info["node"]?.stringValue == node.address)
        #expect(info["controlCounters"]?["oversizedRequests"]?.intValue == 2)
    }

    @Test func stringIdsAndBatches() throws {
        try withNodeAndClient { node, raw in
            raw.write(Array(#"{"jsonrpc":"2.0","id":"a-1","method":"node.info"}"#.utf8) + [0x0A])
            let single = try decodeJSON(try #require(raw.readLine(timeout: 10)))
            #expect(single["id"] == .string("a-1"))
            #expect(single["result"]?["node"]?.stringValue == node.address)

            // A request with a string id, a notification, an unknown method with a number id, and a non-request.
            let batch = #"[{"jsonrpc":"2.0","id":"x","method":"node.info"},{"jsonrpc":"2.0","method":"audio.frame","params":{}},"#
                + #"{"jsonrpc":"2.0","id":7,"method":"no.such"},42]"#
            raw.write(Array(batch.utf8) + [0x0A])
            let batchLine = try #require(raw.readLine(timeout: 10))
            let answers = try #require(try decodeJSON(batchLine).arrayValue)
            #expect(answers.count == 3)
            #expect(answers.first { $0["id"] == .string("x") }?["result"]?["node"]?.stringValue == node.address)
            #expect(answers.first { $0["id"] == .number(7) }?["error"]?["code"]?.intValue == -32601)
            #expect(answers.contains { $0["id"] == .null && $0["error"]?["code"]?.intValue == -32600 })

            // Only notifications: no answer at all, so the next line is the next request's.
            raw.write(Array(#"[{"jsonrpc":"2.0","method":"audio.frame","params":{}}]"#.utf8) + [0x0A])
            raw.write(Array(#"{"jsonrpc":"2.0","id":"after","method":"node.info"}"#.utf8) + [0x0A])
            let next = try decodeJSON(try #require(raw.readLine(timeout: 10)))
            #expect(next["id"] == .string("after"))

            raw.write(Array("[]\n".utf8))
            let empty = try decodeJSON(try #require(raw.readLine(timeout: 10)))
            #expect(empty["error"]?["code"]?.intValue == -32600)
        }
    }

    @Test func aClientThatNeverReadsIsClosed() throws {
        try withNodeAndClient { node, raw in
            // 10,000 requests (~0.5 MB) whose answers (~7 MB) nobody reads.
            let request = Array(#"{"jsonrpc":"2.0","id":1,"method":"node.info"}"#.utf8) + [0x0A]
            let burst = Array((0..<1_000).map { _ in request }.joined())
            for _ in 0..<10 {
                guard raw.write(burst) else { break }
            }
            try node.wait(for: "the non-reading client to be closed", timeout: 30) {
                $0["controlCounters"]?["slowClientsClosed"]?.intValue == 1
            }
            // What the node had queued is what the client can still read, then the end.
            let drained = raw.drainUntilClosed(timeout: 20)
            #expect(drained.closed)
            #expect(drained.bytes <= ControlServer.maxQueuedBytes + 2 * 212_992 + 65_536, "\(drained.bytes) bytes")
        }
    }

    /// At the descriptor limit `accept` fails at once; the node pauses accepting instead of retrying in a loop,
    /// and answers again once descriptors are free.
    @Test func acceptBacksOffAtTheDescriptorLimit() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let node = try NodeProcess("n", in: scratch, arguments: [])
        defer { node.stop() }
        let pid = node.process.processIdentifier
        let open = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count
        let limit = open + 4
        let set = try runCommand("/usr/bin/prlimit", ["--pid", "\(pid)", "--nofile=\(limit):\(limit)"])
        #expect(set.status == 0, "\(set.stderr)")
        var clients: [RawSocket] = []
        defer { clients.forEach { $0.close() } }
        for _ in 0..<16 { clients.append(try RawSocket(path: node.socket)) }
        usleep(500_000)
        let before = try cpuSeconds(pid)
        sleep(3)
        let used = try cpuSeconds(pid) - before
        #expect(used < 0.5, "the node used \(used) s of CPU in 3 s at its descriptor limit")
        clients.forEach { $0.close() }
        clients = []
        let info = try node.ctlJSON(["info"])
        #expect(info["node"]?.stringValue == node.address)
        #expect((info["controlCounters"]?["acceptBackoffs"]?.intValue ?? 0) >= 1)
    }

    /// A control socket nobody accepts on (a node stuck at its descriptor limit, its backlog full): node-ctl
    /// gives up with one clear line instead of waiting forever in `connect`.
    @Test func nodeCtlGivesUpOnASocketThatNeverAccepts() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let path = scratch.file("stuck.sock")
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in path.utf8.enumerated() { raw[i] = b }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        #expect(bound == 0 && listen(listener, 0) == 0)
        let filler = try RawSocket(path: path)
        defer { filler.close() }
        let result = try runCommand(Binaries.nodeCtl, ["--control-socket", path, "info"], timeout: 30)
        #expect(result.status != 0)
        #expect(result.stderr.contains("accepted no connection within 5 s"), "\(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
    }

    /// A node of its own and a raw client of its control socket, closed, stopped and removed after `body`.
    private func withNodeAndClient(_ body: (NodeProcess, RawSocket) throws -> Void) throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let node = try NodeProcess("n", in: scratch, arguments: [])
        defer { node.stop() }
        let raw = try RawSocket(path: node.socket)
        defer { raw.close() }
        try body(node, raw)
    }

    /// User + system CPU time of a process, from /proc/PID/stat (fields 14 and 15, in clock ticks).
    private func cpuSeconds(_ pid: Int32) throws -> Double {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        let fields = stat[stat.index(after: try #require(stat.lastIndex(of: ")")))...].split(separator: " ")
        let ticks = try #require(Double(fields[11])) + (try #require(Double(fields[12])))
        return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}

/// A bare Unix stream socket to the control socket, for bytes `ControlClient` would never send.
final class RawSocket {
    private let fd: Int32
    private var pending: [UInt8] = []
    private var isClosed = false

    init(path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in path.utf8.enumerated() { raw[i] = b }
        }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            Glibc.close(fd)
            throw HarnessError("cannot connect to \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// Writes everything; false when the node closed the connection or stopped reading for 5 s.
    @discardableResult
    func write(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { return false }
            offset += n
        }
        return true
    }

    /// Reads up to 64 KiB, waiting at most until `deadline`; nil on timeout, [] at the end of the stream.
    private func read(until deadline: Date) -> [UInt8]? {
        let wait = max(0, Int32(deadline.timeIntervalSinceNow * 1000))
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, wait) > 0 else { return nil }
        var chunk = [UInt8](repeating: 0, count: 65_536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        return n > 0 ? Array(chunk[..<n]) : []
    }

    func readLine(timeout: TimeInterval) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let newline = pending.firstIndex(of: 0x0A) {
                let line = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(...newline)
                return line
            }
            guard let chunk = read(until: deadline), !chunk.isEmpty else { return nil }
            pending += chunk
        }
    }

    func readLinesUntilClosed(timeout: TimeInterval) -> [String] {
        var lines: [String] = []
        while let line = readLine(timeout: timeout) { lines.append(line) }
        return lines
    }

    /// Reads and discards until the node closes the connection: the bytes read and whether it closed.
    func drainUntilClosed(timeout: TimeInterval) -> (bytes: Int, closed: Bool) {
        let deadline = Date().addingTimeInterval(timeout)
        var total = pending.count
        while let chunk = read(until: deadline) {
            if chunk.isEmpty { return (total, true) }
            total += chunk.count
        }
        return (total, false)
    }

    func close() {
        guard !isClosed else { return }
        isClosed = true
        Glibc.close(fd)
    }
}
