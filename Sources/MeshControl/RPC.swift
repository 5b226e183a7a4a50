import Foundation

/// JSON-RPC 2.0 messages, one per line on the control socket (docs/control.md).
public struct RPCMessage: Sendable, Codable, Equatable {
    public var jsonrpc = "2.0"
    public var id: Int?
    public var method: String?
    public var params: JSONValue?
    public var result: JSONValue?
    public var error: RPCError?

    public static func request(id: Int, method: String, params: JSONValue = .object([:])) -> RPCMessage {
        RPCMessage(id: id, method: method, params: params)
    }
    public static func notification(method: String, params: JSONValue) -> RPCMessage {
        RPCMessage(method: method, params: params)
    }
    public static func response(id: Int?, result: JSONValue) -> RPCMessage { RPCMessage(id: id, result: result) }
    public static func failure(id: Int?, error: RPCError) -> RPCMessage { RPCMessage(id: id, error: error) }

    public func encodedLine() -> [UInt8] {
        var bytes = Array((try? JSONEncoder().encode(self)) ?? Data())
        bytes.append(UInt8(ascii: "\n"))
        return bytes
    }

    public static func decode(line: some Collection<UInt8>) -> RPCMessage? {
        try? JSONDecoder().decode(RPCMessage.self, from: Data(line))
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
