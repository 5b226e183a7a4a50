import Foundation
import Logging
@testable import MeshDaemon
import MeshMetrics
import NIOCore
import Testing

@Suite struct MetricsTests {
    /// Prometheus' rules for metric and label names.
    static var metricName: Regex<Substring> { /[a-zA-Z_:][a-zA-Z0-9_:]*/ }
    static var labelName: Regex<Substring> { /[a-zA-Z_][a-zA-Z0-9_]*/ }

    @Test func rendersTheTextFormatWithHelpTypeAndEscapedLabels() {
        var snapshot = MetricsSnapshot()
        snapshot.add("meshnode_x_total", .counter, "Things \\ counted\nover two lines.", by: "reason", ["a": 1, "b": 22])
        snapshot.add("meshnode_y_seconds", .gauge, "A gauge.", 0.25)
        snapshot.families.append(.init(name: "meshnode_z", type: .gauge, help: "Odd labels.",
                                       samples: [.init(labels: ["path": "C:\\dir \"q\"\nend", "a": "first"], value: -1.5)]))
        #expect(snapshot.prometheusText() == """
            # HELP meshnode_x_total Things \\\\ counted\\nover two lines.
            # TYPE meshnode_x_total counter
            meshnode_x_total{reason="a"} 1
            meshnode_x_total{reason="b"} 22
            # HELP meshnode_y_seconds A gauge.
            # TYPE meshnode_y_seconds gauge
            meshnode_y_seconds 0.25
            # HELP meshnode_z Odd labels.
            # TYPE meshnode_z gauge
            meshnode_z{a="first",path="C:\\\\dir \\"q\\"\\nend"} -1.5

            """)
        #expect([Double.infinity, -.infinity, .nan, 1e20].map(MetricsSnapshot.format) == ["+Inf", "-Inf", "NaN", "1e+20"])
        // node-ctl reads the snapshot back from JSON.
        let decoded = try? JSONDecoder().decode(MetricsSnapshot.self, from: JSONEncoder().encode(snapshot))
        #expect(decoded == snapshot)
    }

    /// A real node's snapshot: names valid and unique, counters named `_total` and never going back between two
    /// snapshots, and every family rendered with its HELP and TYPE lines.
    @Test func aNodesSnapshotHasValidNamesAndMonotoneCounters() throws {
        let dir = NSTemporaryDirectory() + "mesh-metrics-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = NodeConfig()
        config.listen = HostPort(host: "127.0.0.1", port: 0)
        config.dataDir = dir
        config.metrics = HostPort(host: "127.0.0.1", port: 0)
        let runtime = try NodeRuntime.start(config: config, logger: Logger(label: "metrics-test"))
        defer {
            runtime.shutdown()
            runtime.waitUntilStopped()
        }
        let first = try runtime.loop.submit { runtime.metricsSnapshot() }.wait()
        // Some input between the two, as if it came to the node's port: a datagram of no known type, and one in
        // STUN's range (first byte 0–3) that is no STUN message.
        let source = try SocketAddress(ipAddress: "127.0.0.1", port: 9)
        try runtime.loop.submit {
            runtime.receive(datagram: [0x70, 1, 2], from: source)
            runtime.receive(datagram: [0x00, 1, 2], from: source)
        }.wait()
        let second = try runtime.loop.submit { runtime.metricsSnapshot() }.wait()

        #expect(Set(first.families.map(\.name)).count == first.families.count)
        #expect(first.families.map(\.name) == second.families.map(\.name))
        for family in second.families {
            #expect(family.name.wholeMatch(of: Self.metricName) != nil, "\(family.name)")
            #expect(family.name.hasPrefix("meshnode_"), "\(family.name)")
            #expect(family.name.hasSuffix("_total") == (family.type == .counter), "\(family.name)")
            #expect(!family.help.isEmpty, "\(family.name)")
            for sample in family.samples {
                #expect(sample.labels.keys.allSatisfy { $0.wholeMatch(of: Self.labelName) != nil }, "\(family.name)")
            }
        }
        for family in second.families where family.type == .counter {
            for sample in family.samples {
                let before = first.value(family.name, sample.labels) ?? 0
                #expect(sample.value >= before, "\(sample.series(family.name)) went back from \(before) to \(sample.value)")
            }
        }
        #expect(second.value("meshnode_link_dropped_total", ["reason": "malformed"]) == 1)
        #expect(second.value("meshnode_link_packets_in_total") == 1)
        #expect(second.value("meshnode_stun_dropped_total", ["reason": "malformed"]) == 1)
        #expect(second.value("meshnode_relay_sessions") == 0)

        // docs/metrics.md lists every family, with its type.
        let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs/metrics.md")
        let rows = try String(contentsOf: docs, encoding: .utf8).split(separator: "\n").filter { $0.hasPrefix("| `meshnode_") }
        #expect(rows.map { $0.split(separator: "`")[1] } == second.families.map { Substring($0.name) })
        for (row, family) in zip(rows, second.families) {
            #expect(row.contains("` | \(family.type.rawValue) |"), "\(row)")
        }

        let text = second.prometheusText()
        for family in second.families {
            #expect(text.contains("# HELP \(family.name) "))
            #expect(text.contains("# TYPE \(family.name) \(family.type.rawValue)\n"))
        }
    }
}
