import ArgumentParser
import Foundation
import MeshControl

/// Options every node-ctl command shares.
struct Connection: ParsableArguments {
    @Option(help: "Control socket of the node (default $MESH_CONTROL_SOCKET or ~/.mesh/control.sock).")
    var controlSocket: String = ControlDefaults.socketPath

    func call(_ method: String, _ params: JSONValue = .object([:])) throws -> JSONValue {
        do {
            let client = try ControlClient(path: controlSocket)
            defer { client.close() }
            return try client.call(method, params, timeout: 10)
        } catch {
            throw CtlError(description: "\(error)")
        }
    }
}

struct CtlError: Error, CustomStringConvertible { let description: String }

struct NodeCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node-ctl",
        abstract: "Inspect and steer a running mesh-node through its control socket.",
        version: "0.1.0",
        subcommands: [Info.self, Peers.self, Calls.self, Hangup.self])
}

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
        print(Table.render(rows, header: nil))
    }
}

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
             p["lastSeenMsAgo"]?.doubleValue.map { String(format: "%.1f s ago", $0 / 1000) } ?? "-"]
        }
        print(Table.render(rows, header: ["PEER", "ENDPOINT", "STATE", "RTT", "LOSS", "PKTS IN/OUT", "BYTES IN/OUT", "LAST SEEN"]))
        print("\(peers.filter { $0["state"]?.stringValue == "up" }.count) of \(peers.count) links up")
    }
}

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

struct Hangup: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "End a call (a unique prefix of its id is enough).")
    @OptionGroup var connection: Connection
    @Argument(help: "The call id (from node-ctl calls).") var call: String

    func run() throws {
        let result = try connection.call("call.hangup", .object(["call": .string(call)]))
        print("call \(text(result["call"])) ended")
    }
}

func text(_ value: JSONValue?) -> String {
    switch value {
    case .string(let s)?: s
    case .number(let n)?: n.rounded() == n ? String(Int(n)) : String(format: "%.1f", n)
    case .bool(let b)?: b ? "yes" : "no"
    default: "-"
    }
}

func ms(_ value: JSONValue?) -> String { value?.doubleValue.map { String(format: "%.1f ms", $0) } ?? "-" }

func bytes(_ value: JSONValue?) -> String {
    guard let n = value?.doubleValue else { return "-" }
    if n >= 1_048_576 { return String(format: "%.1f MiB", n / 1_048_576) }
    if n >= 1_024 { return String(format: "%.1f KiB", n / 1_024) }
    return "\(Int(n)) B"
}

/// Left-aligned columns separated by two spaces.
enum Table {
    static func render(_ rows: [[String]], header: [String]?) -> String {
        let all = (header.map { [$0] } ?? []) + rows
        guard let columns = all.map(\.count).max(), columns > 0 else { return "" }
        let widths = (0..<columns).map { c in all.map { c < $0.count ? $0[c].count : 0 }.max() ?? 0 }
        return all.map { row in
            row.enumerated().map { i, cell in
                i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}

/// `node-ctl --control-socket PATH peers` must work as well as `node-ctl peers --control-socket PATH`:
/// a leading --control-socket is moved after the subcommand, where the parser expects it.
var arguments = Array(CommandLine.arguments.dropFirst())
if let first = arguments.first, first == "--control-socket" || first.hasPrefix("--control-socket=") {
    let count = first.contains("=") ? 1 : 2
    if arguments.count > count {
        let option = Array(arguments[0..<count])
        arguments.removeFirst(count)
        arguments.insert(contentsOf: option, at: 1)
    }
}
NodeCtl.main(arguments)
