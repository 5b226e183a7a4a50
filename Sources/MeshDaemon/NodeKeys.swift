import Foundation
import MeshIdentity

/// Loading the node key and the hosted wallets for `mesh-node run`.
enum NodeKeys {
    static func load(config: NodeConfig) throws(ConfigError) -> (node: PrivateKey, wallets: [PrivateKey]) {
        let passphrase = try config.passphraseFile.map { (f) throws(ConfigError) in
            do { return try KeyStore.readPassphrase(fromFile: f) } catch { throw ConfigError("passphrase file: \(error)") }
        }
        // Every input is checked before anything is created: a bad --wallet must not leave a new node.key.
        let wallets = try config.walletFiles.map { (f) throws(ConfigError) in try load(f, passphrase: passphrase, what: "wallet") }
        let node: PrivateKey
        if let file = config.keyFile {
            node = try load(file, passphrase: passphrase, what: "key")
        } else {
            let file = config.dataDir + "/node.key"
            if FileManager.default.fileExists(atPath: file) {
                node = try load(file, passphrase: passphrase, what: "key")
            } else {
                node = PrivateKey()
                do {
                    try FileManager.default.createDirectory(atPath: config.dataDir, withIntermediateDirectories: true,
                                                            attributes: [.posixPermissions: 0o700])
                    try KeyStore.create(node, at: file, passphrase: passphrase)
                } catch {
                    throw ConfigError("data dir \(config.dataDir): cannot create the node key (\(error))")
                }
            }
        }
        return (node, wallets.isEmpty ? [node] : wallets)
    }

    private static func load(_ file: String, passphrase: [UInt8]?, what: String) throws(ConfigError) -> PrivateKey {
        do {
            return try KeyStore.load(from: file, passphrase: passphrase)
        } catch {
            throw ConfigError("\(what): \(error)")
        }
    }
}

/// Names of the WAV files the `record` auto-answer mode writes: `<UTC time>-<caller>.wav`.
enum Recordings {
    static func path(directory: String, caller: WalletAddress, nowMs: Int64) throws -> String {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss.SSS'Z'"
        let stamp = formatter.string(from: Date(timeIntervalSince1970: Double(nowMs) / 1000))
        return "\(directory)/\(stamp)-\(caller.checksummed).wav"
    }
}

/// 16-bit little-endian PCM frames as base64 text, the form audio takes on the control socket.
public enum PCM {
    public static func base64(_ samples: [Int16]) -> String {
        Data(littleEndianBytes(samples)).base64EncodedString()
    }

    public static func samples(base64 text: String) -> [Int16]? {
        guard let data = Data(base64Encoded: text), data.count % 2 == 0 else { return nil }
        return samples(littleEndian: Array(data))
    }

    public static func samples(littleEndian bytes: [UInt8]) -> [Int16] {
        stride(from: 0, to: bytes.count - 1, by: 2).map { Int16(bitPattern: UInt16(bytes[$0]) | UInt16(bytes[$0 + 1]) << 8) }
    }

    public static func littleEndianBytes(_ samples: [Int16]) -> [UInt8] {
        var bytes = [UInt8]()
        bytes.reserveCapacity(samples.count * 2)
        for s in samples {
            let u = UInt16(bitPattern: s)
            bytes.append(UInt8(u & 0xff))
            bytes.append(UInt8(u >> 8))
        }
        return bytes
    }
}
