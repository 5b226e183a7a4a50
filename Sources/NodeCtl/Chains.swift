import ArgumentParser
import Foundation
import MeshControl

struct Sessions: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Forwarded sessions: call, chain, role, in-link/label, out-link/label, packets, bytes, drops, idle time.")
    @OptionGroup var connection: Connection
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let result = try connection.call("sessions.list")
        if json { return print(result.prettyText()) }
        let sessions = result["sessions"]?.arrayValue ?? []
        let rows = sessions.map { s in
            [text(s["call"]), text(s["chain"]), text(s["role"]), text(s["state"]),
             s["upstream"].map { "\(text($0))/\(text(s["upstreamLabel"]))" } ?? "-",
             s["downstream"].map { "\(text($0))/\(text(s["downstreamLabel"]))" } ?? "-",
             "\(text(s["packetsForward"]))/\(text(s["packetsBack"]))",
             "\(bytes(s["bytesForward"]))/\(bytes(s["bytesBack"]))", text(s["drops"]) + (s["quelched"]?.boolValue == true ? " (quelched)" : ""),
             ago(s["idleMs"])]
        }
        print(Table.render(rows, header: ["CALL", "CHAIN", "ROLE", "STATE", "IN LINK/LABEL", "OUT LINK/LABEL", "PACKETS FWD/BACK",
                                          "BYTES FWD/BACK", "DROPS", "IDLE"]))
        let c = result["counters"] ?? .null
        print("\(sessions.count) sessions; forwarded \(text(c["forwardedPackets"])) packets; dropped: \(text(c["unknownLabel"])) unknown label, "
              + "\(text(c["wrongNeighbour"])) wrong link, \(text(c["quelchDrops"])) quelched; set-ups relayed \(text(c["setupsRelayed"])), refused \(text(c["setupsRefused"]))")
    }
}

struct Route: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Where a wallet is homed and the next hops a call from this node would try, in order, with their costs.")
    @OptionGroup var connection: Connection
    @Argument(help: "The wallet address (0x + 40 hex).") var address: String
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let result = try connection.call("route.explain", .object(["address": .string(address)]))
        if json { return print(result.prettyText()) }
        print("wallet \(text(result["wallet"])) is homed at \(text(result["home"])) (from \(text(result["source"])))")
        let relays = result["relays"]?.arrayValue ?? []
        if !relays.isEmpty { print("its record lists relays: \(relays.map { text($0) }.joined(separator: ", "))") }
        let candidates = result["candidates"]?.arrayValue ?? []
        guard !candidates.isEmpty else {
            return print("no next hop toward it within \(text(result["hopLimit"])) links: a call would have to open a link first")
        }
        let rows = candidates.enumerated().map { i, c in
            [i == 0 ? "→ \(i + 1)" : "  \(i + 1)", text(c["via"]), text(c["links"]), text(c["cost"]), text(c["why"])]
        }
        print(Table.render(rows, header: ["TRY", "NEXT HOP", "LINKS", "COST", "WHY"]))
    }
}

struct Trace: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: """
            Live per-hop figures of a call's chains (RTT and loss per link) and its quality: the tier, every judge's \
            verdict and the tier's history; refreshed until Ctrl-C.
            """)
    @OptionGroup var connection: Connection
    @Argument(help: "The call id (or a unique prefix).") var call: String
    @Option(help: "Seconds between refreshes.") var interval: Double = 1
    @Option(help: "Stop after this many refreshes (default: until Ctrl-C).") var count: Int?
    @Flag(help: "Print JSON (one document per refresh).") var json = false

    func validate() throws {
        guard interval >= 0.1 else { throw ValidationError("--interval must be at least 0.1 s") }
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
    }

    func run() throws {
        var round = 0
        while count.map({ round < $0 }) ?? true {
            if round > 0 { Thread.sleep(forTimeInterval: interval) }
            round += 1
            let result = try connection.call("calls.list")
            let matches = (result["calls"]?.arrayValue ?? []).filter { text($0["id"]).hasPrefix(call.lowercased()) }
            guard matches.count == 1, let c = matches.first else {
                throw CtlError(description: matches.isEmpty ? "no call \(call)" : "call id \(call) is ambiguous")
            }
            if json {
                print(JSONValue.object(["call": c["id"] ?? .null, "state": c["state"] ?? .null, "chains": c["chains"] ?? .array([]),
                                        "chainSwitches": c["chainSwitches"] ?? .array([]),
                                        "quality": c["control"]?["quality"] ?? .null]).prettyText())
            } else {
                print(Self.render(c))
            }
            if c["state"]?.stringValue == "ended" { break }
        }
    }

    static func render(_ c: JSONValue) -> String {
        var lines = ["call \(text(c["id"])) \(text(c["role"])) \(text(c["state"])) \(text(c["path"]))"]
        for chain in c["chains"]?.arrayValue ?? [] {
            lines.append("  \(text(chain["role"])) chain \(text(chain["chain"])): end-to-end RTT \(ms(chain["rttMs"])), "
                         + "heard \(ago(chain["lastHeardMsAgo"]))")
            let hops = chain["hops"]?.arrayValue ?? []
            let nodes = chain["nodes"]?.arrayValue ?? []
            let rows = hops.enumerated().map { i, h in
                ["  \(i + 1)", text(h["node"]), i < nodes.count ? text(nodes[i]) : "-", ms(h["rttMs"]),
                 h["lossPercent"]?.doubleValue.map { String(format: "%.1f %%", $0) } ?? "-"]
            }
            lines.append(Table.render(rows, header: ["  HOP", "FROM", "TO", "RTT", "LOSS"]))
        }
        for s in c["chainSwitches"]?.arrayValue ?? [] {
            lines.append("  switched: \(text(s["why"])) → \((s["to"]?.arrayValue ?? []).map { text($0) }.joined(separator: " > "))")
        }
        if let q = c["control"]?["quality"], q != .null {
            lines.append("  quality \(text(q["tier"])) (ceiling \(text(q["ceiling"]))): \(text(q["why"]))")
            lines.append("    judges: this end \(text(q["own"]?["tier"])) (\(text(q["own"]?["why"]))), the other end \(text(q["peer"]))")
            for v in q["verdicts"]?.arrayValue ?? [] {
                lines.append("    relay \(text(v["node"])): \(text(v["tier"])) (\(text(v["figures"])), \(ago(v["ageMs"])))")
            }
            for s in q["switches"]?.arrayValue ?? [] {
                lines.append("    \(text(s["from"])) → \(text(s["to"])): \(text(s["why"]))")
            }
        }
        return lines.joined(separator: "\n")
    }
}
