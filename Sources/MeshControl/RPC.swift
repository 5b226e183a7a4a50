import Foundation

/// A JSON-RPC 2.0 request id: a number or a string (§4); the response carries it back unchanged.
public enum RPCID: Sendable, Codable, Hashable {
    case number(Int)
    case string(String)

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let n = try? c.decode(Int.self) { self = .number(n) } else { self = .string(try c.decode(String.self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .number(let n): try c.encode(n)
        case .string(let s): try c.encode(s)
        }
    }
}

/// JSON-RPC 2.0 messages, one per line on the control socket (docs/control.md).
public struct RPCMessage: Sendable, Codable, Equatable {
    public var jsonrpc = "2.0"
    public var id: RPCID?
    public var method: String?
    public var params: JSONValue?
    public var result: JSONValue?
    public var error: RPCError?

    public static func request(id: RPCID, method: String, params: JSONValue = .object([:])) -> RPCMessage {
        RPCMessage(id: id, method: method, params: params)
    }
    public static func notification(method: String, params: JSONValue) -> RPCMessage {
        RPCMessage(method: method, params: params)
    }
    public static func response(id: RPCID?, result: JSONValue) -> RPCMessage { RPCMessage(id: id, result: result) }
    public static func failure(id: RPCID?, error: RPCError) -> RPCMessage { RPCMessage(id: id, error: error) }

    private enum CodingKeys: String, CodingKey { case jsonrpc, id, method, params, result, error }

    /// As synthesized, except that a response always has an id (§5: null when the request's is unknown).
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(jsonrpc, forKey: .jsonrpc)
        if let id { try c.encode(id, forKey: .id) } else if method == nil { try c.encodeNil(forKey: .id) }
        try c.encodeIfPresent(method, forKey: .method)
        try c.encodeIfPresent(params, forKey: .params)
        try c.encodeIfPresent(result, forKey: .result)
        try c.encodeIfPresent(error, forKey: .error)
    }

    public func encodedLine() -> [UInt8] { Self.line(self) }

    /// A batch's responses, one array on one line (§6).
    public static func encodedLine(batch: [RPCMessage]) -> [UInt8] { line(batch) }

    private static func line(_ value: some Encodable) -> [UInt8] {
        var bytes = Array((try? JSONEncoder().encode(value)) ?? Data())
        bytes.append(UInt8(ascii: "\n"))
        return bytes
    }

    public static func decode(line: some Collection<UInt8>) -> RPCMessage? {
        try? JSONDecoder().decode(RPCMessage.self, from: Data(line))
    }
}

/// One line a client sent: a message, or a batch (§6: an array of messages; an entry that is not one is
/// nil and gets an "invalid request" answer of its own).
public enum RPCIncoming: Sendable, Equatable {
    case single(RPCMessage)
    case batch([RPCMessage?])

    /// Nil when the line is not JSON-RPC at all (a parse error).
    public init?(line: some Collection<UInt8>) {
        let space: Set<UInt8> = [0x20, 0x09, 0x0D]
        if line.first(where: { !space.contains($0) }) == UInt8(ascii: "[") {
            guard let entries = try? JSONDecoder().decode([BatchEntry].self, from: Data(line)) else { return nil }
            self = .batch(entries.map(\.message))
        } else {
            guard let message = RPCMessage.decode(line: line) else { return nil }
            self = .single(message)
        }
    }

    private struct BatchEntry: Decodable {
        let message: RPCMessage?
        init(from decoder: Decoder) throws { message = try? RPCMessage(from: decoder) }
    }
}

public struct RPCError: Error, Sendable, Codable, Equatable, CustomStringConvertible {
    public var code: Int
    public var message: String
    public init(code: Int, message: String) {
        self.code = code
        self.message = message
    }
    public static func parse(_ m: String) -> RPCError { RPCError(code: -32700, message: m) }
    public static func invalidRequest(_ m: String) -> RPCError { RPCError(code: -32600, message: m) }
    public static func methodNotFound(_ m: String) -> RPCError { RPCError(code: -32601, message: "unknown method \(m)") }
    public static func invalidParams(_ m: String) -> RPCError { RPCError(code: -32602, message: m) }
    /// Application errors: the request was understood but cannot be done (unknown call, no route…).
    public static func failed(_ m: String) -> RPCError { RPCError(code: 1, message: m) }
    public var description: String { message }
}

/// The default control socket, shared by the daemon and the clients: `$MESH_CONTROL_SOCKET`, else `~/.mesh/control.sock`.
public enum ControlDefaults {
    public static var dataDirectory: String {
        let home = ProcessInfo.processInfo.environment["HOME"] ?? "/root"
        return home + "/.mesh"
    }

    public static var socketPath: String {
        ProcessInfo.processInfo.environment["MESH_CONTROL_SOCKET"] ?? dataDirectory + "/control.sock"
    }
}
