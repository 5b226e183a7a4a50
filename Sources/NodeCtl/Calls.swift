import ArgumentParser
import Foundation
import MeshControl

struct Calls: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Calls: path, codec, packets, loss, jitter, playout delay.")
    @OptionGroup var connection: Connection
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let result = try connection.call("calls.list")
        if json { return print(result.prettyText()) }
        let calls = result["calls"]?.arrayValue ?? []
        let rows = calls.map { c in
            let m = c["media"] ?? .null
            return [text(c["id"]), text(c["role"]), text(c["remote"]), text(c["state"]) + (c["endReason"].map { " (\(text($0)))" } ?? ""),
                    text(c["path"]), m == .null ? "-" : "opus \(Int((m["bitrate"]?.doubleValue ?? 0) / 1000))k",
                    m == .null ? "-" : "\(text(m["packetsSent"]))/\(text(m["packetsReceived"]))/\(text(m["packetsLost"]))",
                    ms(m["jitterMs"]), ms(m["meanPlayoutDelayMs"]),
                    String(format: "%.1f s", c["durationS"]?.doubleValue ?? 0)]
        }
        print(Table.render(rows, header: ["CALL", "ROLE", "PEER", "STATE", "PATH", "CODEC", "SENT/RECV/LOST", "JITTER", "PLAYOUT", "DURATION"]))
        print("\(calls.filter { $0["state"]?.stringValue != "ended" }.count) active, \(calls.count) listed")
    }
}
