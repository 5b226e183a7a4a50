import CSecp256k1
import CSodium

/// The process-wide libsecp256k1 context and libsodium initialisation.
///
/// The context is created and randomized (side-channel blinding) once, on first use, and only read after
/// that: libsecp256k1 documents every call that takes a `const` context as safe to run concurrently.
enum Crypto {
    nonisolated(unsafe) static let secp256k1: OpaquePointer = {
        guard let context = secp256k1_context_create(UInt32(SECP256K1_CONTEXT_NONE)) else {
            fatalError("secp256k1_context_create failed")
        }
        var seed = randomBytes(32)
        defer { Secrets.wipe(&seed) }
        guard secp256k1_context_randomize(context, seed) == 1 else { fatalError("secp256k1_context_randomize failed") }
        return context
    }()

    /// True once `sodium_init` has run; reading it runs it.
    private static let sodiumReady: Bool = sodium_init() >= 0

    /// Ensures libsodium is initialised before any of its functions is called.
    static func requireSodium() {
        precondition(sodiumReady, "sodium_init failed")
    }

    /// `count` bytes from the operating system's CSPRNG (libsodium `randombytes_buf`).
    static func randomBytes(_ count: Int) -> [UInt8] {
        requireSodium()
        var bytes = [UInt8](repeating: 0, count: count)
        randombytes_buf(&bytes, count)
        return bytes
    }
}

/// The operating system's CSPRNG (libsodium `randombytes`), for every module: keys, nonces, indexes, ids.
public enum SecureRandom {
    public static func bytes(_ count: Int) -> [UInt8] { Crypto.randomBytes(count) }

    public static func uint32() -> UInt32 {
        Crypto.requireSodium()
        return randombytes_random()
    }
}

/// Helpers for bytes that must not linger in memory.
public enum Secrets {
    /// Overwrites `bytes` with zeros in place (libsodium `sodium_memzero`, which the compiler cannot elide).
    /// Copies made earlier (Swift arrays are copy-on-write) are not reached.
    public static func wipe(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { buffer in
            if let base = buffer.baseAddress { sodium_memzero(base, buffer.count) }
        }
    }
}

/// Secret bytes in a heap buffer of their own, zeroed when the last reference goes away.
///
/// `@unchecked Sendable`: the buffer is written once in `init` and only read afterwards.
final class SecretBox: @unchecked Sendable {
    private let pointer: UnsafeMutablePointer<UInt8>
    let count: Int

    init(copying bytes: [UInt8]) {
        count = bytes.count
        pointer = .allocate(capacity: count)
        pointer.initialize(from: bytes, count: count)
    }

    deinit {
        sodium_memzero(pointer, count)
        pointer.deallocate()
    }

    /// Lends out the secret; `body` must not keep the pointer.
    func withUnsafePointer<R>(_ body: (UnsafePointer<UInt8>) throws -> R) rethrows -> R {
        try body(pointer)
    }
}
