/**
 * The file kinds the upload gate knows how to verify: for each allowed extension, the
 * media types a client may declare for it, the type file-type must sniff from its magic
 * bytes, and the canonical media type forwarded upstream.
 */
export interface FileKind {
  /** the kind's name, as sniffed by file-type (`jpg`, `png`, `gif`, `pdf`, `tif`, `bmp`) */
  readonly sniffed: string;
  /** the media type written on the forwarded part */
  readonly canonical: string;
  /** media types a client may declare for this kind (lowercase, without parameters) */
  readonly declared: readonly string[];
}

const JPEG: FileKind = {
  sniffed: 'jpg',
  canonical: 'image/jpeg',
  declared: ['image/jpeg', 'image/jpg', 'image/pjpeg'],
};
const PNG: FileKind = { sniffed: 'png', canonical: 'image/png', declared: ['image/png', 'image/x-png'] };
const GIF: FileKind = { sniffed: 'gif', canonical: 'image/gif', declared: ['image/gif'] };
const PDF: FileKind = {
  sniffed: 'pdf',
  canonical: 'application/pdf',
  declared: ['application/pdf', 'application/x-pdf'],
};
const TIFF: FileKind = {
  sniffed: 'tif',
  canonical: 'image/tiff',
  declared: ['image/tiff', 'image/tif', 'image/x-tiff'],
};
const BMP: FileKind = {
  sniffed: 'bmp',
  canonical: 'image/bmp',
  declared: ['image/bmp', 'image/x-bmp', 'image/x-ms-bmp'],
};

/** Every extension the gate can check, lowercase without the dot. */
export const KINDS: Readonly<Record<string, FileKind>> = {
  png: PNG,
  jpg: JPEG,
  jpeg: JPEG,
  jpe: JPEG,
  gif: GIF,
  pdf: PDF,
  tif: TIFF,
  tiff: TIFF,
  bmp: BMP,
};

/** The default allowlist (SPEC section 4). */
export const DEFAULT_EXTENSIONS = ['png', 'jpg', 'jpeg', 'gif', 'pdf', 'tiff', 'bmp'] as const;

/**
 * Extensions that mark a file a web server or a browser may execute or render as a
 * document. They never pass as the final extension (the config refuses them in the
 * allowlist), and as an inner extension (`receipt.php.png`) they are refused unless
 * `allow_double_extensions` is set.
 */
export const DANGEROUS_EXTENSIONS: ReadonlySet<string> = new Set([
  // server-side scripts
  'php',
  'php2',
  'php3',
  'php4',
  'php5',
  'php6',
  'php7',
  'php8',
  'phpt',
  'phtml',
  'phtm',
  'pht',
  'phps',
  'pgif',
  'phar',
  'inc',
  'asp',
  'aspx',
  'asa',
  'asax',
  'ascx',
  'ashx',
  'asmx',
  'cer',
  'cshtml',
  'vbhtml',
  'jsp',
  'jspx',
  'jsw',
  'jsv',
  'jspf',
  'do',
  'action',
  'cgi',
  'pl',
  'pm',
  'py',
  'pyc',
  'rb',
  'erb',
  'lua',
  'sh',
  'bash',
  'zsh',
  'ksh',
  'csh',
  'shtml',
  'shtm',
  'stm',
  'htaccess',
  'htpasswd',
  'config',
  'cfm',
  'cfml',
  'ssi',
  // documents a browser renders with script
  'html',
  'htm',
  'xhtml',
  'xht',
  'mht',
  'mhtml',
  'svg',
  'svgz',
  'xml',
  'xsl',
  'xslt',
  'hta',
  'swf',
  'js',
  'mjs',
  'cjs',
  'jse',
  'vbs',
  'vbe',
  'wsf',
  'wsh',
  'ws',
  'ps1',
  'psm1',
  'psd1',
  // executables and installers
  'exe',
  'dll',
  'com',
  'scr',
  'pif',
  'bat',
  'cmd',
  'msi',
  'msp',
  'cpl',
  'jar',
  'class',
  'war',
  'ear',
  'elf',
  'so',
  'bin',
  'run',
  'app',
  'dmg',
  'pkg',
  'deb',
  'rpm',
  'apk',
  'lnk',
  'reg',
  'sys',
  'drv',
  'ocx',
]);

/**
 * Kinds file-type may sniff that never pass whatever the name says: markup, scripts
 * and executables (the check also refuses every sniffed kind that does not match the
 * extension; this list only sharpens the reason given).
 */
export const NEVER_SNIFFED: ReadonlySet<string> = new Set([
  'exe',
  'elf',
  'mach',
  'dll',
  'msi',
  'cab',
  'class',
  'swf',
  'wasm',
  'xml',
  'html',
  'svg',
  'js',
  'lnk',
  'dex',
  'apk',
  'jar',
  'sh',
]);
