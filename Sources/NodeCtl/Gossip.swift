import ArgumentParser
import Foundation
import MeshControl

struct Gossip: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Wallets and nodes known from neighbour gossip: home node, via, hops, cost, age.")
    @OptionGroup var connection: Connection
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let result = try connection.call("gossip.routes")
        if json { return print(result.prettyText()) }
        let routes = result["routes"]?.arrayValue ?? []
        let rows = routes.map { r in
            [text(r["kind"]), text(r["wallet"]), text(r["origin"]), text(r["via"]), text(r["hops"]), text(r["metric"]), text(r["sequence"]),
             r["ageMs"]?.doubleValue.map { String(format: "%.0f s", $0 / 1000) } ?? "-"]
        }
        print(Table.render(rows, header: ["KIND", "WALLET/NODE", "HOME NODE", "VIA", "HOPS", "COST", "SEQ", "AGE"]))
        let wallets = routes.filter { $0["kind"]?.stringValue == "wallet" }
        let hosted = wallets.filter { $0["via"]?.stringValue == "self" }.count
        print("\(wallets.count) wallets: \(hosted) hosted here, \(wallets.count - hosted) learned; "
              + "\(routes.count - wallets.count) nodes (this one included)")
    }
}
