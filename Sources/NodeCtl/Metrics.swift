import ArgumentParser
import Foundation
import MeshControl
import MeshMetrics

struct Metrics: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Everything the node counts, as its /metrics endpoint serves it (docs/metrics.md): series and value.")
    @OptionGroup var connection: Connection
    @Flag(help: "Print JSON (the node.metrics result).") var json = false
    @Flag(help: "Print the Prometheus text exposition format.") var prometheus = false

    func run() throws {
        let result = try connection.call("node.metrics")
        if json { return print(result.prettyText()) }
        let snapshot: MetricsSnapshot
        do {
            snapshot = try JSONDecoder().decode(MetricsSnapshot.self, from: JSONEncoder().encode(result))
        } catch {
            throw CtlError(description: "node.metrics answered something that is not a metrics snapshot (\(error))")
        }
        if prometheus { return print(snapshot.prometheusText(), terminator: "") }
        let rows = snapshot.families.flatMap { family in
            family.samples.map { [$0.series(family.name), MetricsSnapshot.format($0.value), family.type.rawValue] }
        }
        print(Table.render(rows, header: ["SERIES", "VALUE", "TYPE"]))
    }
}
