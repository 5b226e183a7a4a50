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
        subcommands: [Info.self, Peers.self, Calls.self, Hangup.self, Profile.self, Hold.self, Resume.self, Mute.self, Unmute.self,
                      Quelch.self, Unquelch.self, Transfer.self, Routes.self, DHT.self, Gossip.self, Sessions.self, Route.self,
                      Trace.self, Metrics.self])
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

struct Profile: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Switch this node's encoder of a call to another quality profile (at the next packet, no click).")
    @OptionGroup var connection: Connection
    @Argument(help: "The call id (or a unique prefix).") var call: String
    @Argument(help: "studio (64 kbit/s), good (32), normal (24), degraded (12 + FEC), catastrophic (6, 40 ms frames + FEC).")
    var profile: String

    func run() throws {
        let result = try connection.call("call.profile", .object(["call": .string(call), "profile": .string(profile)]))
        print("call \(text(result["call"])) now sends \(text(result["profile"]))")
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

/// A `…MsAgo` figure as "1.2 s ago", or `none` when absent.
func ago(_ value: JSONValue?, none: String = "-") -> String {
    value?.doubleValue.map { String(format: "%.1f s ago", $0 / 1000) } ?? none
}

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
/// a leading --control-socket is moved to the end, after the (possibly nested) subcommand that parses it.
/// What follows it must then be a subcommand: else the error names that word, not the moved option.
var arguments = Array(CommandLine.arguments.dropFirst())
if let first = arguments.first, first == "--control-socket" || first.hasPrefix("--control-socket=") {
    let count = first.contains("=") ? 1 : 2
    if arguments.count > count {
        let option = Array(arguments[0..<count])
        arguments.removeFirst(count)
        let subcommands = NodeCtl.configuration.subcommands.map { $0._commandName } + ["help"]
        if let word = arguments.first, !word.hasPrefix("-"), !subcommands.contains(word) {
            NodeCtl.exit(withError: ValidationError(
                "unknown subcommand '\(word)' (one of: \(subcommands.dropLast().joined(separator: ", ")))"))
        }
        arguments.append(contentsOf: option)
    }
}
NodeCtl.main(arguments)
