import ArgumentParser
import Foundation
import MeshControl

struct Calls: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: """
            Calls: path, codec, packets, loss, FEC/redundancy recoveries, jitter, playout delay (now/mean/p95), \
            time-stretch, drift, DTX; then each call's relay chains (active, standby) with per-hop RTT and loss.
            """)
    @OptionGroup var connection: Connection
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let result = try connection.call("calls.list")
        if json { return print(result.prettyText()) }
        let calls = result["calls"]?.arrayValue ?? []
        let rows = calls.map { c in
            let m = c["media"] ?? .null
            let media = m != .null
            func n(_ key: String, _ format: String = "%.0f") -> String {
                m[key]?.doubleValue.map { String(format: format, $0) } ?? "-"
            }
            return [text(c["id"]), text(c["role"]), text(c["remote"]),
                    text(c["state"]) + (c["endReason"].map { " (\(text($0)))" } ?? ""), text(c["path"]),
                    media ? "opus \(m["bitrate"]?.intValue.map { "\($0 / 1000)" } ?? "-")k \(text(m["profile"]))"
                        + (m["redundancy"]?.boolValue == true ? "+red" : "") : "-",
                    media ? "\(text(m["packetsSent"]))/\(text(m["packetsReceived"]))/\(text(m["packetsLost"]))" : "-",
                    media ? "\(n("lateLossPercent", "%.1f"))/\(n("concealmentPercent", "%.1f")) %" : "-",
                    media ? "\(text(m["fecRecovered"]))/\(text(m["redundancyRecovered"]))" : "-",
                    media ? "\(n("currentPlayoutDelayMs"))/\(n("meanPlayoutDelayMs"))/\(n("p95PlayoutDelayMs")) ms" : "-",
                    ms(m["jitterMs"]),
                    media ? "\(n("timeStretchPercent", "%.1f")) %" : "-",
                    media ? (m["driftPpm"]?.doubleValue.map { String(format: "%+.0f ppm", $0) } ?? "-") : "-",
                    media ? "\(n("dtxSentPercent"))/\(n("dtxPercent")) %" : "-",
                    String(format: "%.1f s", c["durationS"]?.doubleValue ?? 0)]
        }
        print(Table.render(rows, header: ["CALL", "ROLE", "PEER", "STATE", "PATH", "CODEC", "SENT/RECV/LOST",
                                          "LATE/CONCEAL", "FEC/RED", "PLAYOUT NOW/MEAN/P95", "JITTER", "STRETCH", "DRIFT",
                                          "DTX OUT/IN", "DURATION"]))
        for c in calls {
            if let control = c["control"], control != .null, c["state"]?.stringValue == "active" { print(describeControl(control)) }
            if let d = c["direct"], d != .null {
                print("\(text(c["id"])) direct path: \(text(d["state"])), \(text(d["local"])) > \(text(d["remote"])), "
                      + "\(text(d["attempts"])) attempt(s), \(text(d["fallbacks"])) fallback(s)")
            }
            for chain in c["chains"]?.arrayValue ?? [] {
                print("\(text(c["id"])) \(text(chain["role"])) chain: \(ChainText.describe(chain))")
            }
        }
        print("\(calls.filter { $0["state"]?.stringValue != "ended" }.count) active, \(calls.count) listed")
    }
}
