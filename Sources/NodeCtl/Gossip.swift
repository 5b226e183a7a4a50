import ArgumentParser
import Foundation
import MeshControl

struct Gossip: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Wallets known from neighbour gossip: origin, via, hops, cost, age.")
    @OptionGroup var connection: Connection
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let result = try connection.call("gossip.routes")
        if json { return print(result.prettyText()) }
        let routes = result["routes"]?.arrayValue ?? []
        let rows = routes.map { r in
            [text(r["wallet"]), text(r["origin"]), text(r["via"]), text(r["hops"]), text(r["metric"]), text(r["sequence"]),
             r["ageMs"]?.doubleValue.map { String(format: "%.0f s", $0 / 1000) } ?? "-"]
        }
        print(Table.render(rows, header: ["WALLET", "HOME NODE", "VIA", "HOPS", "COST", "SEQ", "AGE"]))
        let hosted = routes.filter { $0["via"]?.stringValue == "self" }.count
        print("\(routes.count) wallets: \(hosted) hosted here, \(routes.count - hosted) learned")
    }
}
