import ArgumentParser
import MeshControl

/// The call-control commands (docs/calls.md, "Call control"): one JSON-RPC method each on a call id.
protocol CallControlCommand: ParsableCommand {
    static var method: String { get }
    var target: CallTarget { get }
    var extra: [String: JSONValue] { get }
}

/// What every call-control command takes: the node, the call, and how to print the outcome.
struct CallTarget: ParsableArguments {
    @OptionGroup var connection: Connection
    @Argument(help: "The call id (or a unique prefix; at a relay, from node-ctl sessions).") var call: String
    @Flag(help: "Print JSON.") var json = false
}

extension CallControlCommand {
    var extra: [String: JSONValue] { [:] }

    func run() throws {
        let result = try target.connection.call(Self.method, .object(["call": .string(target.call)].merging(extra) { a, _ in a }))
        print(target.json ? result.prettyText() : describeControl(result))
    }
}

/// One line: what the node now does with the call.
func describeControl(_ c: JSONValue) -> String {
    if c["role"]?.stringValue == "relay" {
        return "call \(text(c["call"])): " + (c["quelched"]?.boolValue == true ? "quelched here (the caller's media stops at this relay)" : "not quelched here")
    }
    var parts = ["hold \(text(c["hold"]))"]
    if let q = c["quality"], q != .null { parts.append("quality \(text(q["tier"])): \(text(q["why"]))") }
    if c["muted"]?.boolValue == true { parts.append("muted") }
    if c["quelchedHere"]?.boolValue == true { parts.append("caller quelched here") }
    let by = c["quelchedBy"]?.arrayValue ?? []
    if !by.isEmpty { parts.append("quelched by \(by.map { text($0) }.joined(separator: ", "))") }
    if let t = c["transfer"], t != .null {
        parts.append("transfer \(text(t["state"])) to \(text(t["to"]))" + (t["reason"].map { " (\(text($0)))" } ?? ""))
    }
    return "call \(text(c["call"])): " + parts.joined(separator: ", ")
}

struct Hold: CallControlCommand {
    static let configuration = CommandConfiguration(
        abstract: "Put a call on hold: no media either way, the other side hears comfort noise; the call stays up.")
    static let method = "call.hold"
    @OptionGroup var target: CallTarget
}

struct Resume: CallControlCommand {
    static let configuration = CommandConfiguration(abstract: "Take a call this node put on hold off hold.")
    static let method = "call.resume"
    @OptionGroup var target: CallTarget
}

struct Mute: CallControlCommand {
    static let configuration = CommandConfiguration(abstract: "Mute this side of a call (it sends silence; nothing is signalled).")
    static let method = "call.mute"
    @OptionGroup var target: CallTarget
}

struct Unmute: CallControlCommand {
    static let configuration = CommandConfiguration(abstract: "Unmute this side of a call.")
    static let method = "call.unmute"
    @OptionGroup var target: CallTarget
}

struct Quelch: CallControlCommand {
    static let configuration = CommandConfiguration(
        abstract: """
            Stop the caller's media toward the callee: at the callee's node (it is no longer played), or at a relay \
            of the call (it is dropped there); both ends get a notice signed by this node.
            """)
    static let method = "call.quelch"
    @OptionGroup var target: CallTarget
}

struct Unquelch: CallControlCommand {
    static let configuration = CommandConfiguration(abstract: "Let the caller's media through again (see quelch).")
    static let method = "call.unquelch"
    @OptionGroup var target: CallTarget
}

struct Transfer: CallControlCommand {
    static let configuration = CommandConfiguration(
        abstract: """
            Blind transfer, at the callee's node: the caller's node calls TARGET instead; this call ends when TARGET \
            answers, and stays on hold if it does not.
            """)
    static let method = "call.transfer"
    @OptionGroup var target: CallTarget
    @Argument(help: "The wallet to transfer the caller to (0x…).") var wallet: String
    var extra: [String: JSONValue] { ["to": .string(wallet)] }
}
