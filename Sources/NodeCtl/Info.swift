import ArgumentParser
import Foundation
import MeshControl

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The node: address, endpoint, wallets, counters.")
    @OptionGroup var connection: Connection
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let info = try connection.call("node.info")
        if json { return print(info.prettyText()) }
        let wallets = info["wallets"]?.arrayValue?.compactMap(\.stringValue) ?? []
        var rows: [[String]] = [
            ["node", text(info["node"])],
            ["listen", text(info["listen"])],
            ["control", text(info["controlSocket"])],
            ["metrics", info["metrics"]?.stringValue.map { "http://\($0)/metrics" } ?? "off"],
            ["wallets", wallets.joined(separator: " ")],
            ["auto-answer", text(info["autoAnswer"])],
            ["uptime", "\(text(info["uptimeS"])) s"],
            ["peers up", text(info["peersUp"])],
            ["active calls", text(info["callsActive"])],
        ]
        let link = info["linkCounters"] ?? .null
        rows.append(["datagrams", "in \(text(link["packetsIn"])), out \(text(link["packetsOut"]))"])
        rows.append(["dropped", ["malformed", "unknownSession", "authFailed", "replayed", "handshakeRefused", "pinMismatch"]
            .map { "\($0) \(text(link[$0]))" }.joined(separator: ", ")])
        let node = info["nodeCounters"] ?? .null
        rows.append(["refused media", "unknown call \(text(node["mediaUnknownCall"])), wrong neighbour \(text(node["mediaWrongNeighbour"]))"])
        let direct = info["direct"] ?? .null
        let times = direct["msToDirect"] ?? .null
        rows.append(["direct paths", "attempts \(text(direct["attempts"])), successes \(text(direct["successes"])), "
                     + "fallbacks \(text(direct["fallbacks"])); answer to direct media p50 \(text(times["p50"])) ms, "
                     + "p95 \(text(times["p95"])) ms, max \(text(times["max"])) ms over \(text(times["count"])) calls"])
        let control = info["controlCounters"] ?? .null
        rows.append(["control socket", ["connectionsAccepted", "oversizedRequests", "slowClientsClosed", "acceptBackoffs"]
            .map { "\($0) \(text(control[$0]))" }.joined(separator: ", ")])
        print(Table.render(rows, header: nil))
    }
}
