import ArgumentParser
import Foundation
import MeshControl

struct Peers: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Links to neighbours: state, RTT, loss, traffic.")
    @OptionGroup var connection: Connection
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let result = try connection.call("node.peers")
        if json { return print(result.prettyText()) }
        let peers = result["peers"]?.arrayValue ?? []
        let rows = peers.map { p in
            [text(p["address"]), text(p["endpoint"]), text(p["state"]) + (p["pinned"]?.boolValue == true ? " (pinned)" : ""),
             ms(p["rttMs"]), String(format: "%.0f%%", p["lossPercent"]?.doubleValue ?? 0),
             "\(text(p["packetsIn"]))/\(text(p["packetsOut"]))", bytes(p["bytesIn"]) + "/" + bytes(p["bytesOut"]),
             ago(p["lastSeenMsAgo"])]
        }
        print(Table.render(rows, header: ["PEER", "ENDPOINT", "STATE", "RTT", "LOSS", "PKTS IN/OUT", "BYTES IN/OUT", "LAST SEEN"]))
        print("\(peers.filter { $0["state"]?.stringValue == "up" }.count) of \(peers.count) links up")
        for p in peers { if let refusal = p["refusal"]?.stringValue { print("\(text(p["endpoint"])): \(refusal)") } }
    }
}
