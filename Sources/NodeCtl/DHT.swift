import ArgumentParser
import Foundation
import MeshControl

struct Routes: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The Kademlia routing table: buckets and their contacts.")
    @OptionGroup var connection: Connection
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let result = try connection.call("dht.routes")
        if json { return print(result.prettyText()) }
        let buckets = result["buckets"]?.arrayValue ?? []
        var rows: [[String]] = []
        for bucket in buckets {
            for c in bucket["contacts"]?.arrayValue ?? [] {
                rows.append([text(bucket["index"]), text(c["address"]), text(c["endpoint"]),
                             ago(c["lastSeenMsAgo"], none: "never"),
                             ms(c["rttMs"])])
            }
        }
        print(Table.render(rows, header: ["BUCKET", "NODE", "ENDPOINT", "LAST SEEN", "RTT"]))
        print("\(rows.count) contacts in \(buckets.count) buckets; node id \(text(result["nodeID"])); \(text(result["records"])) records held")
    }
}

struct DHT: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dht", abstract: "Queries of the distributed hash table.",
                                                    subcommands: [Lookup.self])

    struct Lookup: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Find the presence record of a wallet address (exit 1 when not found).")
        @OptionGroup var connection: Connection
        @Argument(help: "The wallet address.") var address: String
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            let result = try connection.call("dht.lookup", .object(["address": .string(address)]))
            if json {
                print(result.prettyText())
            } else if let record = result["record"], record != .null {
                let rows = [
                    ["wallet", text(record["wallet"])], ["home node", text(record["homeNode"])],
                    ["endpoints", (record["endpoints"]?.arrayValue ?? []).map(text).joined(separator: " ")],
                    ["relays", (record["relays"]?.arrayValue ?? []).map(text).joined(separator: " ")],
                    ["sequence", text(record["sequence"])], ["expires in", "\(text(record["expiresInS"])) s"],
                    ["lookup", result["queried"]?.intValue == 0 ? "answered from this node's store"
                        : "\(text(result["queried"])) nodes queried, \(text(result["rounds"])) rounds, \(text(result["messages"])) messages, \(text(result["elapsedMs"])) ms"],
                ]
                print(Table.render(rows, header: nil))
            } else {
                let skew = result["clockSkew"]?.stringValue.map { "; \($0)" } ?? ""
                print("not found: \(address) (\(text(result["queried"])) nodes queried, \(text(result["rounds"])) rounds, \(text(result["elapsedMs"])) ms\(skew))")
            }
            if result["record"] == nil || result["record"] == .null { throw ExitCode(1) }
        }
    }
}
