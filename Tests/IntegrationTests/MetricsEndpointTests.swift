import Foundation
import MeshControl
import MeshMetrics
import Testing

/// `mesh-node run --metrics HOST:PORT` (docs/metrics.md): the endpoint on a real node, against `node-ctl metrics`.
@Suite struct MetricsEndpointTests {
    @Test func servesTheSnapshotThatNodeCtlReads() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let a = try NodeProcess("a", in: scratch, arguments: ["--metrics", "127.0.0.1:0"])
        defer { a.stop() }
        let b = try NodeProcess("b", in: scratch, arguments: ["--peer", "\(a.address)@\(a.endpoint)", "--auto-answer", "echo"])
        defer { b.stop() }
        try a.wait(for: "b's link") { $0["peersUp"]?.intValue == 1 }

        let address = try #require(try a.ctlJSON(["info"])["metrics"]?.stringValue)
        #expect(address.hasPrefix("127.0.0.1:") && !address.hasSuffix(":0"))
        let logged = a.logText().split(separator: "\n").filter { $0.hasSuffix(" metrics endpoint") }
        #expect(logged.count == 1 && logged[0].contains("address=\(address) "), "\(a.logText())")
        #expect(try b.ctlJSON(["info"])["metrics"] == .null)

        let scrape = try HTTP.get(address, "/metrics")
        let snapshot = try JSONDecoder().decode(MetricsSnapshot.self, from: Data(a.ctl(["metrics", "--json"]).stdout.utf8))
        #expect(scrape.status == 200)
        #expect(scrape.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
        let scraped = Exposition(scrape.body)
        // The same names, in the same order, with HELP and TYPE lines.
        #expect(scraped.families == snapshot.families.map(\.name))
        #expect(scraped.types == snapshot.families.map(\.type.rawValue))
        for name in ["meshnode_link_packets_in_total", "meshnode_peers_up", "meshnode_uptime_seconds", "meshnode_relay_sessions",
                     "meshnode_dht_messages_in_total", "meshnode_control_connections_accepted_total"] {
            #expect(scraped.values[name] != nil, "\(name) missing from /metrics")
        }
        #expect(scraped.values["meshnode_peers_up"] == 1)
        #expect(scraped.values["meshnode_link_dropped_total{reason=\"malformed\"}"] != nil)
        // Read after the scrape, node-ctl's counters are the scrape's or later ones.
        let packetsIn = try #require(scraped.values["meshnode_link_packets_in_total"])
        #expect(packetsIn > 0)
        #expect(packetsIn <= snapshot.value("meshnode_link_packets_in_total") ?? -1)
        // node-ctl renders the same text from the same snapshot.
        let text = try a.ctl(["metrics", "--prometheus"])
        #expect(text.status == 0 && Exposition(text.stdout).families == scraped.families)
        let table = try a.ctl(["metrics"])
        #expect(table.status == 0 && table.stdout.contains("meshnode_link_packets_in_total"))

        #expect(try HTTP.get(address, "/other").status == 404)
        #expect(try HTTP.get(address, "/metrics", method: "POST").status == 405)

        // A call: its series while it lasts, the node-wide media counters after it, no counter going back.
        let (callee, socket) = (b.address, a.socket)
        let call = Background { try runCommand(Binaries.meshNode, ["call", callee, "--control-socket", socket, "--duration", "1.5"]) }
        var during = Exposition("")
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            during = Exposition(try HTTP.get(address, "/metrics").body)
            if during.values.keys.contains(where: { $0.hasPrefix("meshnode_call_jitter_seconds{call=\"") }) { break }
            usleep(100_000)
        }
        #expect(during.values["meshnode_calls_active"] == 1)
        #expect(during.values.keys.contains { $0.hasPrefix("meshnode_call_playout_delay_seconds{call=\"") })
        #expect(try call.wait().status == 0)
        let after = Exposition(try HTTP.get(address, "/metrics").body)
        #expect(after.values["meshnode_calls_active"] == 0)
        #expect(!after.values.keys.contains { $0.hasPrefix("meshnode_call_") })
        #expect((after.values["meshnode_media_packets_sent_total"] ?? 0) > 0)
        #expect((after.values["meshnode_media_packets_received_total"] ?? 0) > 0)
        for (series, value) in scraped.values where series.contains("_total") {
            #expect(after.values[series].map { $0 >= value } == true, "\(series) went from \(value) to \(after.values[series] ?? -1)")
        }
    }

    @Test func aBadMetricsValueIsOneLineAndCreatesNothing() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let data = scratch.file("d")
        let run = ["run", "--listen", "127.0.0.1:0", "--data-dir", data, "--control-socket", scratch.file("d.sock")]
        let notHostPort = try runCommand(Binaries.meshNode, run + ["--metrics", "9100"], timeout: 20)
        #expect(notHostPort.status != 0)
        #expect(notHostPort.stderr.trimmingCharacters(in: .whitespacesAndNewlines) ==
            "Error: --metrics: expected HOST:PORT, got \"9100\"", "\(notHostPort.stderr)")

        let busy = try NodeProcess("busy", in: scratch, arguments: ["--metrics", "127.0.0.1:0"])
        defer { busy.stop() }
        let taken = try #require(try busy.ctlJSON(["info"])["metrics"]?.stringValue)
        let inUse = try runCommand(Binaries.meshNode, run + ["--metrics", taken], timeout: 20)
        let lines = inUse.stderr.split(separator: "\n")
        #expect(inUse.status != 0 && lines.count == 1, "\(inUse.stderr)")
        #expect(lines.first?.hasPrefix("Error: metrics \(taken): cannot bind TCP") == true, "\(inUse.stderr)")
        #expect(!FileManager.default.fileExists(atPath: data))
    }
}

/// The families, types and samples of a text exposition.
private struct Exposition {
    var families: [String] = []
    var types: [String] = []
    /// `name{labels}` → value.
    var values: [String: Double] = [:]

    init(_ text: String) {
        var helped: Set<String> = []
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ", maxSplits: 3)
            if words.first == "#", words.count >= 3 {
                if words[1] == "HELP" { helped.insert(String(words[2])) }
                if words[1] == "TYPE", helped.contains(String(words[2])), words.count == 4 {
                    families.append(String(words[2]))
                    types.append(String(words[3]))
                }
            } else if let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) {
                values[String(line[..<space])] = value
            }
        }
    }
}

/// A minimal HTTP/1.1 client over a TCP socket to a loopback IPv4 `HOST:PORT`.
private enum HTTP {
    struct Response {
        var status: Int
        var headers: [String: String]
        var body: String
    }

    static func get(_ address: String, _ path: String, method: String = "GET") throws -> Response {
        let parts = address.split(separator: ":")
        guard parts.count == 2, let port = UInt16(parts[1]) else { throw HarnessError("not HOST:PORT: \(address)") }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HarnessError("socket: \(errno)") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        inet_pton(AF_INET, String(parts[0]), &sin.sin_addr)
        let connected = withUnsafePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw HarnessError("connect \(address): errno \(errno)") }
        let request = Array("\(method) \(path) HTTP/1.1\r\nHost: \(address)\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8)
        guard send(fd, request, request.count, 0) == request.count else { throw HarnessError("send: errno \(errno)") }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = recv(fd, &chunk, chunk.count, 0)
            guard n > 0 else { break }
            bytes += chunk[..<n]
        }
        let text = String(decoding: bytes, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { throw HarnessError("no HTTP response: \(text)") }
        let head = text[..<split.lowerBound].components(separatedBy: "\r\n")
        guard let status = head.first?.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else {
            throw HarnessError("no status line: \(text)")
        }
        var headers: [String: String] = [:]
        for line in head.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return Response(status: status, headers: headers, body: String(text[split.upperBound...]))
    }
}
