/**
 * Ctrl-C (SIGINT) and SIGTERM (what `timeout`, docker and Kubernetes send) for long CLI commands: the first
 * one aborts the run's signal, so it stops cleanly at its next cancellation point and leaves nothing behind;
 * a second one quits at once.
 */

/** The exit status of a run stopped by `signal` (128 + its number, as shells report it). */
export const EXIT_CODES = { SIGINT: 130, SIGTERM: 143 } as const

export type StopSignal = keyof typeof EXIT_CODES

/** The outcome of an interruptible run: its value, or the signal that stopped it. */
export type Interruptible<T> = { value: T; lateSignal: StopSignal | null } | { stoppedBy: StopSignal }

/**
 * Runs `work` with SIGINT and SIGTERM wired to its AbortSignal. `onStop` is called on the first signal (to
 * tell the user); on a second one the process exits with that signal's status. A run that finishes despite
 * a signal (too late to stop it) resolves with its value and `lateSignal`; one that was cancelled resolves
 * with `stoppedBy`; any other failure rejects.
 */
export async function interruptible<T>(
  work: (signal: AbortSignal) => Promise<T>,
  onStop: (signal: StopSignal) => void,
  onQuit: (signal: StopSignal) => void,
  isCancelled: (error: unknown) => boolean,
): Promise<Interruptible<T>> {
  const controller = new AbortController()
  let received: StopSignal | null = null
  const handlers = (Object.keys(EXIT_CODES) as StopSignal[]).map((signal) => {
    const handler = (): void => {
      if (received === null) {
        received = signal
        onStop(signal)
        controller.abort()
      } else {
        onQuit(signal)
        process.exit(EXIT_CODES[signal])
      }
    }
    process.on(signal, handler)
    return [signal, handler] as const
  })
  try {
    const value = await work(controller.signal)
    return { value, lateSignal: received }
  } catch (error) {
    if (received !== null && isCancelled(error)) return { stoppedBy: received }
    throw error
  } finally {
    for (const [signal, handler] of handlers) process.removeListener(signal, handler)
  }
}
